"""The soak's arithmetic and its report (bench/soak.py drives the pod; this turns samples
into words): a least-squares line through each container's RSS and open fds after the
warm-up, growth per hour with its 95% interval, and the markdown of ``soak.md`` and of
the soak's section in ``memory.md``. Standard library only, no I/O: unit-tested in
tests/bench. (The leading underscore keeps ``make bench`` from running it.)
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

POD = ("registrar", "tunnel", "gateway", "http-api")  # the pod's containers
SECTION_START = "<!-- soak: written by bench/soak.py -->"
SECTION_END = "<!-- /soak -->"
# two-sided 97.5% quantiles of Student's t for small samples; the normal's 1.96 beyond
_T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26,
         10: 2.23, 15: 2.13, 20: 2.09, 30: 2.04, 60: 2.00}


@dataclass(frozen=True)
class Fit:
    """``y = intercept + slope * t`` by least squares; ``half_width`` is the 95% interval's
    half width of the slope (Student's t, independent residuals assumed: samples of a
    process's memory are not, so read a narrow interval as a lower bound on the doubt)."""

    slope: float
    intercept: float
    half_width: float
    n: int

    @property
    def flat(self) -> bool:
        """No growth measurable: the 95% interval of the slope includes zero."""
        return abs(self.slope) <= self.half_width


def t975(dof: int) -> float:
    if dof <= 0:
        return math.inf
    for limit in sorted(_T975):
        if dof <= limit:
            return _T975[limit]
    return 1.96


def fit(ts: list[float], ys: list[float]) -> Fit:
    """Least-squares line; at least three points with two distinct times."""
    if len(ts) != len(ys) or len(ts) < 3:
        raise ValueError(f"a fit needs three samples or more (have {len(ts)})")
    n = len(ts)
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    stt = sum((t - mt) ** 2 for t in ts)
    if stt == 0:
        raise ValueError("a fit needs samples at different times")
    slope = sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / stt
    intercept = my - slope * mt
    residual = sum((y - intercept - slope * t) ** 2 for t, y in zip(ts, ys, strict=True))
    stderr = math.sqrt(residual / (n - 2) / stt)
    return Fit(slope, intercept, t975(n - 2) * stderr, n)


@dataclass
class Sample:
    """One reading of every process: seconds since the load began (negative while idle,
    before it), and per name VmRSS in KiB and the number of open fds."""

    t: float
    rss_kib: dict[str, int]
    fds: dict[str, int]
    phase: str  # "idle", "load" or "after"


@dataclass
class Growth:
    name: str
    rss: Fit          # MiB per hour
    fds: Fit          # fds per hour
    rss_late: Fit     # MiB per hour over the second half of the fitted samples only
    idle_mib: float
    load_mib: float   # median under load, after the warm-up
    peak_mib: float   # highest under load
    after_mib: float  # idle again, once the load stopped
    fds_idle: int
    fds_load: tuple[int, int]  # min, max under load after the warm-up
    fds_after: int


def growth(samples: list[Sample], warmup: float) -> list[Growth]:
    """Per process seen in every sample: the fits over the load samples after
    ``warmup`` seconds, and the idle / under load / after figures."""
    idle = [s for s in samples if s.phase == "idle"]
    load = [s for s in samples if s.phase == "load" and s.t >= warmup]
    after = [s for s in samples if s.phase == "after"]
    if not idle or len(load) < 6:
        raise ValueError(f"need idle samples and six load samples after the warm-up "
                         f"(have {len(idle)} and {len(load)})")
    names = set.intersection(*(set(s.rss_kib) for s in samples))
    out = []
    for name in sorted(names, key=lambda n: (n not in POD, POD.index(n) if n in POD else 0,
                                             n)):
        hours = [s.t / 3600 for s in load]
        rss = [s.rss_kib[name] / 1024 for s in load]
        fds = [float(s.fds[name]) for s in load]
        out.append(Growth(
            name=name, rss=fit(hours, rss), fds=fit(hours, fds),
            rss_late=fit(hours[len(hours) // 2:], rss[len(rss) // 2:]),
            idle_mib=idle[-1].rss_kib[name] / 1024, load_mib=statistics.median(rss),
            peak_mib=max(rss),
            after_mib=(after[-1].rss_kib[name] / 1024) if after else math.nan,
            fds_idle=idle[-1].fds[name], fds_load=(int(min(fds)), int(max(fds))),
            fds_after=after[-1].fds[name] if after else -1))
    return out


@dataclass
class Traffic:
    """What one load generator did: successes, failures, the last failure, and totals."""

    what: str
    ok: int = 0
    errors: int = 0
    last_error: str = ""
    totals: dict[str, float] = field(default_factory=dict)

    def add(self, key: str, amount: float = 1) -> None:
        self.totals[key] = self.totals.get(key, 0) + amount

    def failed(self, error: BaseException | str) -> None:
        self.errors += 1
        self.last_error = " ".join((str(error) or type(error).__name__).split())[:160]


def _signed(value: float, width: float, unit: str) -> str:
    return f"{value:+.2f} ± {width:.2f} {unit}/h"


def _verdict(g: Growth) -> str:
    rss = "none measurable" if g.rss.flat else ("**grows**" if g.rss.slope > 0 else "shrinks")
    fds = "none measurable" if g.fds.flat else ("**grows**" if g.fds.slope > 0 else "shrinks")
    return f"RSS {rss}; fds {fds}"


def render_soak(growths: list[Growth], traffic: list[Traffic], meta: dict[str, Any]) -> str:
    """bench/results/soak.md."""
    lines = [
        "# Soak",
        "",
        f"Generated by `{meta['command']}` on {meta['when']} ({meta['cpus']} CPUs, load"
        f" {meta['load']:.1f} at the start). The pod as `make run` starts it"
        f" (`scripts/run.py --free-ports{meta['run_flags']}`: kubesim, the dev control plane,"
        " the demo app, the four services), idle"
        f" {meta['idle']:.0f} s, then {meta['minutes']:g} minutes of steady traffic, then"
        f" idle {meta['idle']:.0f} s again. VmRSS (`/proc/PID/status`) and open fds"
        f" (`/proc/PID/fd`) of every process every {meta['interval']:g} s; the growth is"
        " the slope of a least-squares line through the load samples after a warm-up of"
        f" {meta['warmup']:.0f} s ({meta['fitted']} samples), per hour, with its 95% interval"
        " (residuals taken as independent, which a process's memory is not: a narrow"
        " interval is optimistic). Target (issue 14): no growth measurable, i.e. an"
        " interval that includes zero. The second half's slope alone tells a leak (as"
        " steep as the whole) from a cache or bounded buffer filling up (flattening).",
        "",
        "| container | RSS growth | 2nd half | fds growth | verdict | RSS idle / under load"
        " (median, peak) / after MiB | fds idle / under load (min-max) / after |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in growths:
        label = g.name if g.name in POD else f"{g.name} (not in the pod)"
        lines.append(
            f"| {label} | {_signed(g.rss.slope, g.rss.half_width, 'MiB')} |"
            f" {_signed(g.rss_late.slope, g.rss_late.half_width, 'MiB')} |"
            f" {_signed(g.fds.slope, g.fds.half_width, 'fds')} | {_verdict(g)} |"
            f" {g.idle_mib:.1f} / {g.load_mib:.1f}, {g.peak_mib:.1f} / {g.after_mib:.1f} |"
            f" {g.fds_idle} / {g.fds_load[0]}-{g.fds_load[1]} / {g.fds_after} |")
    pod = [g for g in growths if g.name in POD]
    if pod:
        flat = [g.name for g in pod if g.rss.flat and g.fds.flat]
        lines += ["", f"Pod: {len(flat)} of {len(pod)} containers with no growth measurable"
                      f" in RSS or fds ({', '.join(flat) or 'none'})."]
    if meta.get("rings"):
        lines += ["", "Event histories (bounded: they grow until full, then hold; from the"
                      " sequence numbers the SSE clients saw): " + "; ".join(
                          f"{name} {ring['events']} events of {ring['size']}, "
                          + ("never full" if ring["full_at"] is None else
                             f"full {ring['full_at']:.0f} s into the load")
                          for name, ring in meta["rings"].items()) + "."]
    lines += ["", "## Traffic", "", "| load | done | failed | totals | last failure |",
              "|---|---|---|---|---|"]
    for t in traffic:
        totals = ", ".join(f"{k} {_amount(k, v)}" for k, v in t.totals.items()) or "-"
        lines.append(f"| {t.what} | {t.ok} | {t.errors} | {totals} |"
                     f" {t.last_error.replace('|', '/') or '-'} |")
    if meta.get("notes"):
        lines += ["", meta["notes"].rstrip()]
    return "\n".join(lines) + "\n"


def _amount(key: str, value: float) -> str:
    if "bytes" in key:
        return f"{value / (1 << 20):.1f} MiB"
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}"


def render_memory_section(growths: list[Growth], meta: dict[str, Any]) -> str:
    """The soak's lines in bench/results/memory.md, between markers that
    :func:`splice` finds again: idle and under the soak's load, per container."""
    lines = [
        SECTION_START,
        "## Idle and under the soak's load",
        "",
        f"From `{meta['command']}` on {meta['when']} (details: [soak.md](soak.md)): VmRSS"
        f" after {meta['idle']:.0f} s idle, and under {meta['minutes']:g} minutes of"
        " traffic (streams through the tunnel, watches, SSE clients, Ingress churn,"
        " session commands) after the warm-up.",
        "",
        "| container | idle MiB | under load MiB (median) | peak MiB | growth MiB/h |",
        "|---|---|---|---|---|",
    ]
    pod_idle = pod_load = 0.0
    for g in growths:
        if g.name not in POD:
            continue
        pod_idle += g.idle_mib
        pod_load += g.load_mib
        lines.append(f"| {g.name} | {g.idle_mib:.1f} | {g.load_mib:.1f} | {g.peak_mib:.1f} |"
                     f" {g.rss.slope:+.2f} ± {g.rss.half_width:.2f} |")
    lines += [f"| **pod** | {pod_idle:.1f} | {pod_load:.1f} | | |", SECTION_END]
    return "\n".join(lines) + "\n"


def splice(text: str, section: str) -> str:
    """``text`` with the soak's section replaced by ``section`` (appended if absent)."""
    start = text.find(SECTION_START)
    if start >= 0:
        end = text.find(SECTION_END, start)
        tail = text[end + len(SECTION_END):].lstrip("\n") if end >= 0 else ""
        head = text[:start].rstrip("\n")
        return f"{head}\n\n{section}" + (f"\n{tail}" if tail else "")
    return f"{text.rstrip()}\n\n{section}" if text.strip() else section


def carry(old: str, new: str) -> str:
    """``new`` (memory.md as bench/memory.py renders it) with the soak section ``old``
    holds, so that rerunning the memory bench does not drop the soak's lines."""
    start = old.find(SECTION_START)
    end = old.find(SECTION_END, start)
    if start < 0 or end < 0:
        return new
    return splice(new, old[start:end + len(SECTION_END)] + "\n")
