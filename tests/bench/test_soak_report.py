"""The soak's arithmetic and report (bench/_soak_report.py): a leak is called a leak, a
flat line with noise is not, the warm-up is left out, and memory.md's soak section is
replaced in place, never duplicated."""

from __future__ import annotations

import importlib.util
import random
import sys
from types import ModuleType

import pytest

from tests.helpers import ROOT


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_soak_report",
                                                  ROOT / "bench" / "_soak_report.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


report = _load()


def test_fit_finds_the_slope_and_calls_a_straight_line_growth() -> None:
    line = report.fit([0.0, 1.0, 2.0, 3.0], [5.0, 7.0, 9.0, 11.0])
    assert line.slope == pytest.approx(2.0) and line.intercept == pytest.approx(5.0)
    assert line.half_width == pytest.approx(0.0, abs=1e-9) and not line.flat


def test_fit_calls_noise_around_a_level_flat() -> None:
    rng = random.Random(7)
    ts = [i / 720 for i in range(100)]  # 5 s apart, in hours
    level = report.fit(ts, [70 + rng.gauss(0, 0.3) for _ in ts])
    assert level.flat, level
    leak = report.fit(ts, [70 + 12 * t + rng.gauss(0, 0.3) for t in ts])
    assert not leak.flat and leak.slope == pytest.approx(12, abs=3)


def test_fit_refuses_too_few_samples_or_one_instant() -> None:
    with pytest.raises(ValueError, match="three samples"):
        report.fit([0.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="different times"):
        report.fit([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])


def _samples() -> list:
    """A tunnel that leaks 1 KiB and one fd every sample after a big warm-up step, and a
    registrar that steps up during the warm-up only, then holds."""
    out = [report.Sample(-10.0, {"tunnel": 60000, "registrar": 70000},
                         {"tunnel": 20, "registrar": 25}, "idle")]
    for i in range(60):
        t = i * 5.0
        warm = t < 60
        out.append(report.Sample(
            t, {"tunnel": 61000 + (0 if warm else 8000 + i * 1024),
                "registrar": 70000 + (i * 500 if warm else 6000)},
            {"tunnel": 22 + i, "registrar": 25}, "load"))
    out.append(report.Sample(310.0, {"tunnel": 140000, "registrar": 76000},
                             {"tunnel": 82, "registrar": 25}, "after"))
    return out


def test_growth_leaves_the_warm_up_out_and_names_the_leak() -> None:
    by_name = {g.name: g for g in report.growth(_samples(), warmup=60)}
    assert list(by_name) == ["registrar", "tunnel"]  # the pod's order
    tunnel, registrar = by_name["tunnel"], by_name["registrar"]
    # 1 MiB per 5 s sample = 720 MiB/h; one fd per sample = 720 fds/h
    assert tunnel.rss.slope == pytest.approx(720, rel=1e-6) and not tunnel.rss.flat
    assert tunnel.fds.slope == pytest.approx(720, rel=1e-6) and not tunnel.fds.flat
    assert registrar.rss.flat and registrar.fds.flat  # its step was in the warm-up
    assert (registrar.idle_mib, registrar.after_mib) == (70000 / 1024, 76000 / 1024)
    assert tunnel.fds_idle == 20 and tunnel.fds_after == 82
    assert tunnel.fds_load == (34, 81)  # after the warm-up only
    with pytest.raises(ValueError, match="warm-up"):
        report.growth(_samples(), warmup=10_000)


def test_reports_say_what_grew_and_memory_md_keeps_one_soak_section() -> None:
    growths = report.growth(_samples(), warmup=60)
    traffic = report.Traffic("uploads")
    traffic.ok, traffic.totals["bytes"] = 3, 3 << 20
    traffic.failed(RuntimeError("line one\nline | two"))
    meta = {"command": "bench/soak.py --minutes 5", "cpus": 2, "load": 1.0, "when": "now",
            "run_flags": " --tunnel-tls", "idle": 10, "minutes": 5, "interval": 5,
            "warmup": 60, "fitted": 48, "rings": {
                "tunnel": {"events": 800, "size": 500, "full_at": 123.4},
                "http-api ring": {"events": 900, "size": 2000, "full_at": None}}}
    soak_md = report.render_soak(growths, traffic=[traffic], meta=meta)
    assert "`bench/soak.py --minutes 5`" in soak_md
    row = next(line for line in soak_md.splitlines() if line.startswith("| tunnel |"))
    assert "+720.00" in row and "RSS **grows**; fds **grows**" in row
    row = next(line for line in soak_md.splitlines() if line.startswith("| registrar |"))
    assert "RSS none measurable; fds none measurable" in row
    assert "| uploads | 3 | 1 | bytes 3.0 MiB | line one line / two |" in soak_md
    assert "1 of 2 containers with no growth measurable" in soak_md
    assert ("tunnel 800 events of 500, full 123 s into the load; http-api ring 900 events"
            " of 2000, never full.") in soak_md

    section = report.render_memory_section(growths, meta)
    assert "| registrar | 68.4 |" in section and "| **pod** |" in section
    memory = "# Memory benchmark\n\nthe table\n"
    once = report.splice(memory, section)
    assert once.startswith(memory.rstrip()) and once.count(report.SECTION_START) == 1
    twice = report.splice(once, section.replace("68.4", "99.9"))
    assert twice.count(report.SECTION_START) == 1 and "99.9" in twice and "68.4" not in twice
    # what follows the section survives a rewrite
    followed = once + "\n## Notes\n\nkept\n"
    assert report.splice(followed, section).endswith("## Notes\n\nkept\n")
    assert report.splice("", section) == section
    # bench/memory.py rewrites memory.md: the soak's section is carried over
    rerun = report.carry(followed, "# Memory benchmark\n\na new table\n")
    assert "a new table" in rerun and rerun.count(report.SECTION_START) == 1
    assert "| registrar | 68.4 |" in rerun
    assert report.carry("no section", "fresh\n") == "fresh\n"
