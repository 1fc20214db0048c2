"""``make bench`` writes bench/results/tunnel.md and memory.md (issue 15): each bench,
run small, writes its report with the command that reproduces it and a figure for every
target, measured and judged (met or MISSED), never a threshold asserted here: the
figures are the machine's, only that they are produced is the bench's behaviour."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from tests.helpers import ROOT


def _tunnel_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_tunnel", ROOT / "bench" / "tunnel.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(script: str, *args: str, timeout: float) -> None:
    """Run a bench in a process group of its own: one that overruns is stopped with
    everything it started (memory.py starts the whole pod), not left to the next tests."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{script} did not finish in {timeout:.0f} s: "
                             f"{out[-2000:]}{err[-4000:]}") from None
    assert proc.returncode == 0, out[-2000:] + err[-4000:]


def test_the_tunnel_bench_writes_every_target_with_its_figure(tmp_path: Path) -> None:
    out = tmp_path / "tunnel.md"
    _run("tunnel.py", "--mb", "2", "--reps", "1", "--idle-streams", "20", "--no-ssh",
         "--output", str(out), timeout=240)
    text = out.read_text()
    assert ".venv/bin/python bench/tunnel.py --mb 2 --reps 1 --idle-streams 20 --no-ssh" in text
    for _, _, _, target in _tunnel_bench().TARGETS:
        verdict = re.search(rf"^\* {re.escape(target)}: (.+)$", text, re.MULTILINE)
        assert verdict is not None, target
        if "ssh" in target:  # left out with --no-ssh, and said so
            assert verdict[1] == "not measured"
        else:
            assert re.fullmatch(r"\d+\.\d{3}: (met|MISSED)", verdict[1]), (target, verdict[1])
    assert "ssh -R not measured: left out (--no-ssh)" in text
    # like with like: the tunnel's TLS runs the cipher ssh -R is compared under
    assert "negotiated: TLS_AES_128_GCM_SHA256" in text
    streams = re.search(r"streams_opened_closed_cp: (\d+) / (\d+)", text)
    assert streams is not None
    assert int(streams[1]) > 20 and streams[1] == streams[2]  # every stream closed


def test_the_memory_bench_writes_a_line_per_container_and_the_pod(tmp_path: Path) -> None:
    out = tmp_path / "memory.md"
    _run("memory.py", "--idle", "1", "--rounds", "1", "--output", str(out), timeout=240)
    text = out.read_text()
    assert ".venv/bin/python bench/memory.py --idle 1 --rounds 1 --output" in text
    budgets = {"registrar": 75, "tunnel": 55, "gateway": 80, "http-api": 65}
    for container, budget in budgets.items():
        row = re.search(rf"^\| {re.escape(container)} \| ([\d.]+) \| {budget} \| (yes|no) \|",
                        text, re.MULTILINE)
        assert row is not None, container
        assert float(row[1]) > 0
    pod = re.search(r"^\| \*\*pod\*\* \(the four\) \| ([\d.]+) \| 260 \| (yes|no) \|", text,
                    re.MULTILINE)
    assert pod is not None and float(pod[1]) > 0
