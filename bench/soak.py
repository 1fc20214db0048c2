"""Soak: the pod under steady traffic, RSS and open fds of every container sampled, the
growth per hour reported (bench/results/soak.md; issue 14, target: none measurable), and
idle and under-load RSS per container for bench/results/memory.md (issue 15).

    nice -n 10 .venv/bin/python bench/soak.py [--minutes 10] [--interval 5] [--warmup S]

Starts the pod as ``make run`` does (``scripts/run.py --free-ports --quiet --tunnel-tls``:
kubesim, the dev control plane, the demo app and the four services; the tunnel over
``wss://``, the production path) in a scratch folder, leaves it idle ``--idle`` seconds,
then for ``--minutes`` runs, all at once:

* API requests through the tunnel (the official client with the tunnel kubeconfig, as
  kubectl would: lists of pods, nodes, namespaces, Ingresses);
* watches through the tunnel (Ingresses, the sessions' Deployments), each reopened when
  the server ends it;
* byte streams through the tunnel: downloads and checked uploads to the demo app through
  the control plane's public listener, and raw TCP connections through the agent-http
  forward, as ``kubectl port-forward`` makes;
* SSE clients on the http-api (events, logs, and one that reconnects);
* Ingress churn: an Ingress created, published by the gateway (the control plane lists
  it, its host answers through the tunnel), deleted, unpublished; again;
* session commands through the control plane (start_session, stop_session).

Every ``--interval`` seconds it reads VmRSS (``/proc/PID/status``) and the open fds
(``/proc/PID/fd``) of every process ``run.py`` started; after the load it idles again and
reads once more. The traffic is in ``_soak_load.py``, the fit and the report in
``_soak_report.py``. A bench, never a test.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _soak_report as report
from _soak_load import Load

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
NOTES = HERE / "soak_notes.md"  # a person's reading of the last run: appended to soak.md


# --- the pod ----------------------------------------------------------------------------

def processes(parent: int) -> dict[str, int]:
    """name -> pid of what ``run.py`` started: ``pipeops-NAME`` scripts and the demo app."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            argv = [a.decode(errors="replace")
                    for a in (entry / "cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue
        if ppid != parent:
            continue
        names = [Path(a).name for a in argv[:2]]
        for name in names:
            if name.startswith("pipeops-"):
                found[name.removeprefix("pipeops-")] = int(entry.name)
                break
        else:
            if "pipeops_controlplane.demoapp" in argv:
                found["demoapp"] = int(entry.name)
    return found


def read(pids: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """VmRSS in KiB and the number of open fds, per name."""
    rss, fds = {}, {}
    for name, pid in pids.items():
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss[name] = int(line.split()[1])
        fds[name] = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


def stop_pod(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM: run.py stops what it started; if it cannot within a minute, everything
    is killed (run.py's children run in sessions of their own: killing run.py alone
    would leave them running)."""
    children = {pid: started(pid) for pid in processes(proc.pid).values()}
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid, when in children.items():
        if when is not None and started(pid) == when:  # the same process, not a reused pid
            os.kill(pid, signal.SIGKILL)


def started(pid: int) -> int | None:
    """The process's start time (clock ticks after boot), None when it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def start_pod(run_dir: str, tls: bool) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    argv = [sys.executable, str(ROOT / "scripts" / "run.py"), "--free-ports", "--quiet",
            "--run-dir", run_dir, *(["--tunnel-tls"] if tls else [])]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = Path(run_dir) / "endpoints.json"
    deadline = time.monotonic() + 120
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_pod(proc)
            raise RuntimeError(f"run.py did not come up; see {run_dir}/logs")
        time.sleep(0.2)
    return proc, json.loads(path.read_text())


# --- the run ----------------------------------------------------------------------------

class Sampler:
    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.samples: list[report.Sample] = []
        self.origin = time.monotonic()  # moved to the load's start (idle times < 0)

    def take(self, phase: str) -> None:
        rss, fds = read(self.pids)
        self.samples.append(report.Sample(time.monotonic() - self.origin, rss, fds, phase))

    async def every(self, interval: float, seconds: float, phase: str) -> None:
        end = time.monotonic() + seconds
        while True:
            self.take(phase)
            left = end - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(interval, left))


async def soak(endpoints: dict[str, Any], pids: dict[str, int], args: argparse.Namespace
               ) -> tuple[list[report.Sample], list[report.Traffic]]:
    sampler = Sampler(pids)
    await sampler.every(args.interval, args.idle, "idle")
    with concurrent.futures.ThreadPoolExecutor(16, "soak") as pool:
        load = Load(endpoints, pool)
        began = time.monotonic()
        for sample in sampler.samples:  # the idle ones: seconds before the load
            sample.t -= began - sampler.origin
        sampler.origin = began
        tasks = [asyncio.create_task(t) for t in load.tasks()]
        try:
            await sampler.every(args.interval, args.minutes * 60, "load")
        finally:
            load.halt.set()  # the threads end their call; the tasks end their step
            done, pending = await asyncio.wait(tasks, timeout=90)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            load.close()
        for task in done:
            if task.exception() is not None:
                raise RuntimeError(f"a load generator crashed: {task.exception()!r}")
    await asyncio.sleep(args.idle)
    sampler.take("after")
    args.rings = dict(sorted(load.rings.items(), key=lambda kv: kv[0] == "http-api ring"))
    return sampler.samples, load.traffic


def command_line() -> str:
    niceness = os.nice(0)
    prefix = f"nice -n {niceness} " if niceness else ""
    return prefix + shlex.join([".venv/bin/python", "bench/soak.py", *sys.argv[1:]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load runs")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of load left out of the fit (default: a fifth, at "
                             "most 120)")
    parser.add_argument("--idle", type=float, default=10.0,
                        help="seconds idle before the load (the idle figure) and after it")
    parser.add_argument("--plain-ws", action="store_true", help="the tunnel over ws://")
    parser.add_argument("--output", type=Path, default=RESULTS / "soak.md")
    parser.add_argument("--memory", type=Path, default=RESULTS / "memory.md",
                        help="the file whose soak section is rewritten")
    parser.add_argument("--render", type=Path, metavar="SAMPLES_JSON",
                        help="run nothing: write the reports from a run's samples file")
    args = parser.parse_args()
    if args.render:
        return rerender(args.render, args)
    if args.minutes <= 0 or args.interval <= 0:
        parser.error("--minutes and --interval must be above 0")
    warmup = args.warmup if args.warmup is not None else min(120.0, args.minutes * 12)
    meta = {"command": command_line(), "cpus": os.cpu_count(), "load": os.getloadavg()[0],
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "run_flags": "" if args.plain_ws else " --tunnel-tls", "idle": args.idle,
            "minutes": args.minutes, "interval": args.interval, "warmup": warmup}
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        proc, endpoints = start_pod(tmp, not args.plain_ws)
        try:
            pids = processes(proc.pid)
            print(f"soak: {', '.join(sorted(pids))} up; {args.minutes:g} min of load",
                  flush=True)
            samples, traffic = asyncio.run(soak(endpoints, pids, args))
            meta["rings"] = args.rings
        finally:
            stop_pod(proc)
    write(samples, traffic, meta, args)
    return 0


def write(samples: list[report.Sample], traffic: list[report.Traffic], meta: dict[str, Any],
          args: argparse.Namespace) -> None:
    growths = report.growth(samples, meta["warmup"])
    if NOTES.exists():  # what a person read in the figures, below them
        meta["notes"] = NOTES.read_text()
    meta["fitted"] = sum(1 for s in samples if s.phase == "load" and s.t >= meta["warmup"])
    text = report.render_soak(growths, traffic, meta)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    # everything the report is made of, to re-render it (--render) or look closer
    args.output.with_suffix(".samples.json").write_text(json.dumps(
        {"meta": meta, "traffic": [vars(t) for t in traffic],
         "samples": [vars(s) for s in samples]}) + "\n")
    memory = args.memory.read_text() if args.memory.exists() else ""
    args.memory.write_text(report.splice(memory, report.render_memory_section(growths, meta)))
    print(text)


def rerender(path: Path, args: argparse.Namespace) -> int:
    """The reports again from a run's samples file (a new warm-up with ``--warmup``)."""
    saved = json.loads(path.read_text())
    meta = saved["meta"]
    if args.warmup is not None:
        meta["warmup"] = args.warmup
    write([report.Sample(**s) for s in saved["samples"]],
          [report.Traffic(**t) for t in saved["traffic"]], meta, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
