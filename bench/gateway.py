"""Gateway benchmark (bench/results/gateway.md), real processes on loopback:

1. 10,000 Ingresses preloaded in kubesim: time from the gateway's start to the whole set
   registered at the dev control plane, the control-plane requests it took, the gateway's
   RSS at the end. Targets: under 5 s, under 20 requests, under 120 MiB.
2. One Ingress change to registered at the control plane, p50 and p99 over 200 changes
   (targets: p50 under 100 ms, p99 under 500 ms).
3. A request through the control plane's public listener and the tunnel to a backend,
   against the same request to the backend directly, in the same run (added latency).

    .venv/bin/python bench/gateway.py [--ingresses 10000] [--changes 200] [--requests 300]
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from kubesim.testing import Kubesim  # noqa: E402
from pipeops_controlplane.testing import ControlPlane  # noqa: E402
from tests.gateway.harness import GatewayRun, PodStack, apply, ingress, write_identity  # noqa: E402
from tests.helpers import wait_for  # noqa: E402
from tests.tunnel.e2e_helpers import register  # noqa: E402

RESULTS = HERE / "results" / "gateway.md"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def preload(folder: Path, count: int) -> Path:
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "load"}}]
    docs += [ingress(f"ing-{i:05d}", f"h{i:05d}.load.example.test", namespace="load")
             for i in range(count)]
    path = folder / "ingresses.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    return path


def bench_startup(folder: Path, count: int) -> dict[str, Any]:
    seed = preload(folder, count)
    with Kubesim(seeds=[seed]) as ks, ControlPlane() as cp:
        reg = register(cp)
        state = folder / "state"
        state.mkdir()
        write_identity(state, reg)
        run = GatewayRun(cp, ks.kubeconfig, state, extra=[
            "--set", "gateway.sync_batch_size=1000", "--set", "logging.level=info"])
        started = time.monotonic()
        run.start()
        try:
            record = run.wait_record(lambda r: r.get("msg") == "routes published"
                                     and r.get("routes") == count, 120)
            elapsed = time.monotonic() - started
            held = len(cp.routes(reg["cluster_id"]))
            requests = cp.route_requests()
            rss = rss_mib(run.proc.pid)  # type: ignore[union-attr]
            timeline = {r["msg"]: r["time"][11:23] for r in run.records()
                        if r.get("msg") in ("started", "identity read", "Ingress listed",
                                            "Service listed", "routes published")}
        finally:
            run.stop()
    return {"seconds": elapsed, "held": held, "requests": sum(requests.values()),
            "by_call": requests, "rss_mib": rss, "record": record, "timeline": timeline}


def bench_changes(folder: Path, changes: int) -> dict[str, Any]:
    with Kubesim() as ks, ControlPlane() as cp:
        apply(ks, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}},
              *(ingress(f"c{i}", f"c{i}.example.test") for i in range(100)))
        reg = register(cp)
        state = folder / "state2"
        state.mkdir()
        write_identity(state, reg)
        # the default debounce (the tests' harness shortens it)
        run = GatewayRun(cp, ks.kubeconfig, state, extra=["--set", "gateway.debounce=0.02"])
        run.start()
        try:
            wait_for(lambda: len(cp.routes(reg["cluster_id"])) == 100, 60, what="100 routes")
            path = "/apis/networking.k8s.io/v1/namespaces/apps/ingresses/c7"
            latencies = []
            for n in range(changes):
                port = 1000 + n
                began = time.monotonic()
                status, body = ks.request("PATCH", path, {"spec": {"rules": [
                    {"host": "c7.example.test", "http": {"paths": [{
                        "path": "/", "pathType": "Prefix", "backend": {"service": {
                            "name": "web", "port": {"number": port}}}}]}}]}},
                    content_type="application/merge-patch+json")
                assert status == 200, body

                def registered(port: int = port) -> bool:
                    _, body = cp.request("GET", "/debug/routes?hostname=c7.example.test")
                    return any(r["hostname"] == "c7.example.test" and r["service_port"] == port
                               for r in body["routes"])

                wait_for(registered, 10, interval=0.002, what=f"change {n}")
                latencies.append(time.monotonic() - began)
        finally:
            run.stop()
    latencies.sort()
    return {"p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1],
            "max_ms": 1000 * latencies[-1], "n": len(latencies)}


def timed_get(port: int, host: str, path: str = "/") -> float:
    began = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        reply = conn.getresponse()
        reply.read()
        assert reply.status == 200, reply.status
    finally:
        conn.close()
    return time.perf_counter() - began


def bench_public(folder: Path, requests: int) -> dict[str, Any]:
    (folder / "pod").mkdir()
    pod = PodStack(folder / "pod").start()
    try:
        apply(pod.kubesim, ingress("web", "bench.example.test", port="http"))
        public_port = int(pod.cp.public_url.rsplit(":", 1)[1])
        wait_for(lambda: _answers(public_port), 30, what="the route to answer")
        direct, through = [], []
        for _ in range(requests):  # interleaved: the same noise on both
            direct.append(timed_get(pod.app.port, "bench.example.test"))
            through.append(timed_get(public_port, "bench.example.test"))
    finally:
        pod.stop()
    d, t = statistics.median(direct), statistics.median(through)
    return {"direct_ms": 1000 * d, "through_ms": 1000 * t, "added_ms": 1000 * (t - d),
            "ratio": t / d, "n": requests}


def _answers(port: int) -> bool:
    try:
        timed_get(port, "bench.example.test")
    except (AssertionError, OSError):
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ingresses", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--startups", type=int, default=3, help="runs of part 1 (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs = []
        for rep in range(args.startups):  # the machine is shared: the median of a few
            (folder / f"s{rep}").mkdir()
            runs.append(bench_startup(folder / f"s{rep}", args.ingresses))
        runs.sort(key=lambda r: r["seconds"])
        startup = runs[len(runs) // 2]
        startup["all_seconds"] = [round(r["seconds"], 2) for r in runs]
        startup["rss_mib"] = max(r["rss_mib"] for r in runs)
        print("startup", json.dumps({k: v for k, v in startup.items() if k != "record"}))
        changes = bench_changes(folder, args.changes)
        print("changes", json.dumps(changes))
        public = bench_public(folder, args.requests)
        print("public", json.dumps(public))
    ok = (startup["seconds"] < 5, startup["requests"] < 20, startup["rss_mib"] < 120,
          changes["p50_ms"] < 100, changes["p99_ms"] < 500)
    m = ["ok" if x else "MISSED" for x in ok]
    st, ch, pb = startup, changes, public
    RESULTS.write_text(f"""# Gateway: route sync and the public listener

Reproduce: `.venv/bin/python bench/gateway.py` (`--ingresses {args.ingresses} --changes \
{args.changes} --requests {args.requests}`); part of `make bench`.
Machine: {platform.machine()}, Python {platform.python_version()}, shared and noisy (2 CPUs
for every helper's work), so read the ratios and rerun before believing a single number.

## {args.ingresses:,} Ingresses preloaded, from the gateway's start to all registered

| measure | value | target | |
|---|---:|---:|---|
| seconds, start to the last batch acknowledged (median) | {st['seconds']:.2f} | < 5 | {m[0]} |
| control-plane requests | {st['requests']} | < 20 | {m[1]} |
| gateway RSS at the end (MiB, the highest run) | {st['rss_mib']:.0f} | < 120 | {m[2]} |
| routes held by the control plane | {startup['held']:,} | {args.ingresses:,} | |

Each run, seconds: {st['all_seconds']}. Requests by call: {json.dumps(st['by_call'])} (one
paged read of what is held, then
the whole set as a batched sync of 1,000 ingresses a batch). The seconds include the
process start (imports, the Kubernetes client), the paged list of every kind, and the
extraction of each Ingress.

## One Ingress change to registered at the control plane ({changes['n']} changes)

A merge patch of one Ingress's backend port (100 Ingresses in the cluster), timed until
the control plane's `/debug/routes?hostname=` shows the new port (polled every 2 ms).

| p50 ms | p99 ms | max ms | target |
|---:|---:|---:|---|
| {ch['p50_ms']:.1f} | {ch['p99_ms']:.1f} | {ch['max_ms']:.1f} | < 100 {m[3]}, < 500 {m[4]} |

The gateway's debounce (`gateway.debounce`, 20 ms by default) is part of every number:
it is what lets a burst of edits cost one request per host.

## The public listener: added latency against the backend directly ({public['n']} requests each)

A `GET /` with `Host: bench.example.test`, a new connection per request (the listener
forwards one request per connection), to the demo app directly and through the public
listener -> tunnel stream -> agent -> the Service's address, interleaved.

Where the added time goes: per request the control plane opens a stream (an OPEN
round trip over the WebSocket), and the tunnel asks the gateway's `CheckTarget` (gRPC)
and reads the Service from the API server before it dials; neither answer is cached by
the tunnel today, so those two local round trips are most of it.

| direct p50 ms | through p50 ms | added ms | ratio |
|---:|---:|---:|---:|
| {pb['direct_ms']:.2f} | {pb['through_ms']:.2f} | {pb['added_ms']:.2f} | {pb['ratio']:.2f} |
""")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
