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
reads once more. The fit and the report are in ``_soak_report.py``. A bench, never a test.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import _soak_report as report
import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
DEMO_HOST = "demo.example.test"


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


def start_pod(run_dir: str, tls: bool) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    argv = [sys.executable, str(ROOT / "scripts" / "run.py"), "--free-ports", "--quiet",
            "--run-dir", run_dir, *(["--tunnel-tls"] if tls else [])]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = Path(run_dir) / "endpoints.json"
    deadline = time.monotonic() + 120
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"run.py did not come up; see {run_dir}/logs")
        time.sleep(0.2)
    return proc, json.loads(path.read_text())


# --- the load ---------------------------------------------------------------------------

class Load:
    """The traffic generators; each counts what it did in a :class:`report.Traffic`."""

    def __init__(self, endpoints: dict[str, Any], pool: concurrent.futures.Executor) -> None:
        from kubernetes import config

        self.ep = endpoints
        self.pool = pool
        self.halt = threading.Event()  # the threads' stop signal
        self.cp = endpoints["controlplane"]["url"]
        self.public = endpoints["gateway"]["public_url"]
        self.http_api = endpoints["http_api"]
        self.tunneled = config.new_client_from_config(config_file=endpoints["tunnel"]["kubeconfig"])
        self.direct = config.new_client_from_config(config_file=endpoints["kubesim"]["kubeconfig"])
        self.traffic: list[report.Traffic] = []

    def counter(self, what: str) -> report.Traffic:
        self.traffic.append(report.Traffic(what))
        return self.traffic[-1]

    async def thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def forever(self, traffic: report.Traffic, step: Callable[[], Awaitable[None]],
                      pause: float) -> None:
        """``step`` again and again, ``pause`` apart; a failure is counted, then a pause."""
        while not self.halt.is_set():
            try:
                await step()
                traffic.ok += 1
            except Exception as exc:  # counted, and the last one shown, in the report
                traffic.failed(exc)
            await asyncio.sleep(pause)

    def tasks(self) -> list[Awaitable[None]]:
        return [self.api_requests(), self.watch("Ingresses (all namespaces)"),
                self.watch("session Deployments"), self.downloads(), self.uploads(),
                self.port_forward(), self.sse("events"), self.sse("logs"),
                self.sse("events", reconnect=20), self.ingress_churn(), self.commands()]

    async def api_requests(self) -> None:
        from kubernetes import client

        core, net = client.CoreV1Api(self.tunneled), client.NetworkingV1Api(self.tunneled)
        calls = [core.list_pod_for_all_namespaces, core.list_node, core.list_namespace,
                 net.list_ingress_for_all_namespaces]
        traffic = self.counter("API requests through the tunnel (pods, nodes, namespaces,"
                               " Ingresses)")
        turn = 0

        def call(fn: Callable[..., Any]) -> None:
            # the JSON as kubectl reads it, not the client's typed models (which refuse
            # kubesim's nodes: their nodeInfo has no bootID, machineID, ...)
            reply = fn(_request_timeout=30, _preload_content=False)
            try:
                body = json.loads(reply.data)
            finally:
                reply.release_conn()
            if "items" not in body:
                raise RuntimeError(f"not a list: {str(body)[:80]}")
            traffic.add("items", len(body["items"]))

        async def step() -> None:
            nonlocal turn
            turn += 1
            await self.thread(call, calls[turn % len(calls)])

        await self.forever(traffic, step, 0.25)

    async def watch(self, what: str) -> None:
        from kubernetes import client, watch

        if what.startswith("Ingresses"):
            list_fn: Any = client.NetworkingV1Api(self.tunneled).list_ingress_for_all_namespaces
            kwargs: dict[str, Any] = {}
        else:
            list_fn = client.AppsV1Api(self.tunneled).list_namespaced_deployment
            kwargs = {"namespace": "pipeops-sessions"}
        traffic = self.counter(f"watch of {what} through the tunnel (reopened every 15 s)")

        def once() -> None:
            w = watch.Watch()
            for _ in w.stream(list_fn, timeout_seconds=15, _request_timeout=60, **kwargs):
                traffic.add("events")
                if self.halt.is_set():
                    w.stop()

        await self.forever(traffic, lambda: self.thread(once), 0.1)

    async def downloads(self) -> None:
        traffic = self.counter("downloads from the demo app through the public listener"
                               " (1 MiB each, 16 chunks)")
        async with httpx.AsyncClient(base_url=self.public, headers={"Host": DEMO_HOST},
                                     timeout=60) as http:
            async def step() -> None:
                got = 0
                async with http.stream("GET", "/stream?chunks=16&size=65536&delay=0") as r:
                    r.raise_for_status()
                    async for chunk in r.aiter_bytes():
                        got += len(chunk)
                if got != 16 * 65536:
                    raise RuntimeError(f"got {got} bytes of {16 * 65536}")
                traffic.add("bytes", got)

            await self.forever(traffic, step, 1.0)

    async def uploads(self) -> None:
        traffic = self.counter("uploads to the demo app through the public listener"
                               " (1 MiB each, SHA-256 checked)")
        body = os.urandom(1 << 20)
        digest = hashlib.sha256(body).hexdigest()
        async with httpx.AsyncClient(base_url=self.public, headers={"Host": DEMO_HOST},
                                     timeout=60) as http:
            async def step() -> None:
                r = await http.post("/upload", content=body)
                r.raise_for_status()
                if r.json()["sha256"] != digest:
                    raise RuntimeError("the upload arrived changed")
                traffic.add("bytes", len(body))

            await self.forever(traffic, step, 1.0)

    async def port_forward(self) -> None:
        """A raw TCP connection through the tunnel's agent-http forward (the control
        plane's loopback port, as ``kubectl port-forward`` gives one): 20 requests on it."""
        traffic = self.counter("port-forward-like TCP connections through the agent-http"
                               " forward (20 requests each)")

        async def step() -> None:
            port = await self.forward_port("agent-http")
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                for _ in range(20):
                    writer.write(b"GET /health HTTP/1.1\r\nHost: soak\r\n\r\n")
                    await writer.drain()
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                    length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n")
                                  if h.lower().startswith(b"content-length:"))
                    await reader.readexactly(length)
                    traffic.add("bytes", len(head) + length)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        await self.forever(traffic, step, 0.5)

    async def forward_port(self, name: str) -> int:
        async with httpx.AsyncClient(timeout=10) as http:
            view = (await http.get(f"{self.cp}/debug/tunnels")).json()
        for cluster in view["clusters"]:
            for forward in cluster["forwards"]:
                if forward["name"] == name:
                    return int(forward["remote_port"])
        raise RuntimeError(f"no {name} forward")

    async def sse(self, stream: str, reconnect: float = 0) -> None:
        what = f"SSE client on /api/realtime/{stream}" + (
            f" reconnecting every {reconnect:g} s" if reconnect else "")
        traffic = self.counter(what)
        url = f"{self.http_api['url']}/api/realtime/{stream}?history=20"
        auth = {"Authorization": f"Bearer {self.http_api['token']}"}
        async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=60)) as http:
            async def step() -> None:
                opened = time.monotonic()
                async with http.stream("GET", url, headers=auth) as r:
                    r.raise_for_status()
                    async for line in r.aiter_lines():
                        if line.startswith("data:"):
                            traffic.add("events")
                        if self.halt.is_set() or (
                                reconnect and time.monotonic() - opened > reconnect):
                            return

            await self.forever(traffic, step, 0.1)

    async def ingress_churn(self) -> None:
        from kubernetes import client

        net = client.NetworkingV1Api(self.direct)
        traffic = self.counter("Ingress churn: created, published, answering through the"
                               " tunnel, deleted, unpublished")
        turn = 0

        async def step() -> None:
            nonlocal turn
            turn += 1
            name = f"soak-{turn % 4}"
            host = f"{name}.example.test"
            body = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                    "metadata": {"name": name, "namespace": "demo"},
                    "spec": {"ingressClassName": "nginx", "rules": [{"host": host, "http": {
                        "paths": [{"path": "/", "pathType": "Prefix", "backend": {
                            "service": {"name": "demo-web", "port": {"name": "http"}}}}]}}]}}
            started = time.monotonic()
            await self.thread(lambda: net.create_namespaced_ingress("demo", body))
            try:
                await self.until(lambda: self.routed(host, True), f"{host} published")
                traffic.add("publish seconds", time.monotonic() - started)
                async with httpx.AsyncClient(timeout=30) as http:
                    answer = await http.get(f"{self.public}/", headers={"Host": host})
                if answer.status_code != 200 or answer.json().get("host") != host:
                    raise RuntimeError(f"{host}: {answer.status_code} {answer.text[:80]}")
            finally:
                await self.thread(lambda: net.delete_namespaced_ingress(name, "demo"))
            await self.until(lambda: self.routed(host, False), f"{host} unpublished")

        await self.forever(traffic, step, 1.0)
        if "publish seconds" in traffic.totals and traffic.ok:
            traffic.totals["publish seconds"] /= traffic.ok  # the mean, for the report
            traffic.totals["mean publish seconds"] = traffic.totals.pop("publish seconds")

    async def routed(self, host: str, present: bool) -> bool:
        async with httpx.AsyncClient(timeout=10) as http:
            routes = (await http.get(f"{self.cp}/debug/routes")).json()["routes"]
        return any(r["hostname"] == host for r in routes) == present

    async def until(self, check: Callable[[], Awaitable[bool]], what: str,
                    timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"not {what} after {timeout:.0f} s")
            await asyncio.sleep(0.1)

    async def commands(self) -> None:
        traffic = self.counter("session commands through the control plane (start_session,"
                               " then stop_session)")
        async with httpx.AsyncClient(base_url=self.cp, timeout=90) as http:
            agent = (await http.get("/debug/clusters")).json()[0]["agent_id"]
            turn = 0

            async def command(action: str, payload: dict[str, Any]) -> None:
                r = await http.post(f"/api/v1/agents/{agent}/command", json={
                    "action": action, "payload": payload, "wait": 60})
                record = r.json()
                if r.status_code != 200 or record.get("state") != "complete":
                    raise RuntimeError(f"{action}: {r.status_code} {json.dumps(record)[:120]}")
                traffic.add(action)

            async def step() -> None:
                nonlocal turn
                turn += 1
                session = f"soak-{turn % 3}"
                await command("start_session", {"sessionId": session, "template": "nginx"})
                await command("stop_session", {"sessionId": session})

            await self.forever(traffic, step, 2.0)

    def close(self) -> None:
        self.tunneled.close()
        self.direct.close()


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
        args.began_wall = time.time()
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
    return sampler.samples, load.traffic


def rings(log_dir: Path, began: float) -> dict[str, dict[str, Any]]:
    """When each event history filled up, in seconds since the load began (None: never).

    Every log record at info and above is an event in its container's history (agentkit's
    EventBus, 500 deep), and the http-api keeps the four containers' events in its ring
    (``realtime.buffer``, 2000): memory that grows until the ring is full and is not a
    leak. Counted from the log files, a lower bound (status events are not logged)."""
    times: dict[str, list[float]] = {}
    for name in report.POD:
        path = log_dir / f"{name}.log"
        stamps = []
        for line in path.read_text().splitlines() if path.exists() else []:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                stamps.append(datetime.fromisoformat(json.loads(line)["time"]).timestamp())
        times[name] = sorted(stamps)
    merged = sorted(t for stamps in times.values() for t in stamps)
    out = {}
    for name, stamps, size in [*((n, times[n], 500) for n in report.POD),
                               ("http-api ring", merged, 2000)]:
        out[name] = {"events": len(stamps), "size": size,
                     "full_at": stamps[size - 1] - began if len(stamps) >= size else None}
    return out


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
            meta["rings"] = rings(Path(tmp) / "logs", args.began_wall)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    write(samples, traffic, meta, args)
    return 0


def write(samples: list[report.Sample], traffic: list[report.Traffic], meta: dict[str, Any],
          args: argparse.Namespace) -> None:
    growths = report.growth(samples, meta["warmup"])
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
