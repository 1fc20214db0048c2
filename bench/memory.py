"""Memory benchmark: each container's resident set under ``make run`` (bench/results/memory.md).

    .venv/bin/python bench/memory.py [--idle 10] [--plain-ws]

Starts ``scripts/run.py --free-ports --quiet --tunnel-tls`` (the production path: the
tunnel over ``wss://``) in a scratch folder, waits until everything answers, leaves it
idle for ``--idle`` seconds and reads ``VmRSS`` (and its anonymous/file split) of every
process ``run.py`` started from ``/proc``; then puts a light load on the pod (requests
through the tunnel with kubectl, HTTP to the http-api, a bulk stream through the tunnel)
and reads again, with the peak (``VmHWM``). Generic: every ``pipeops-*`` service run.py
starts is measured, so containers that grow (the gateway, the http-api) are measured as
they land. The import floor of each service (its entry module imported, nothing run) is
measured in a fresh interpreter beside it, to show how much is imports and how much is
running. Budgets are the cost issue's (15); a bench, never a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _soak_report import carry

# as make run starts the services (scripts/run.py's IMAGE_ENV, the images' runtime ENV)
IMAGE_ENV = {"MALLOC_ARENA_MAX": "1", "PYTHONOPTIMIZE": "2"}

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "memory.md"
NOTES = HERE / "memory_notes.md"  # where the memory goes: appended to the results
BIN = Path(sys.executable).parent
KUBECTL = shutil.which("kubectl", path=str(ROOT / ".tools" / "bin")) or shutil.which("kubectl")
POD = ("registrar", "tunnel", "gateway", "http-api")  # the pod's containers
BUDGET_MIB = {"tunnel": 55, "http-api": 65, "registrar": 75, "gateway": 80}
POD_BUDGET_MIB = 260
ENTRY = {"registrar": "pipeops_registrar.__main__", "tunnel": "pipeops_tunnel.__main__",
         "gateway": "pipeops_gateway.__main__", "http-api": "pipeops_http_api.__main__"}


def status_kib(pid: int) -> dict[str, int]:
    """``VmRSS``, ``VmHWM``, ``RssAnon``, ``RssFile``, ``RssShmem`` of ``pid`` in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0])
    return out


def children(parent: int) -> dict[str, int]:
    """name -> pid of the processes ``parent`` started (``pipeops-NAME`` console scripts)."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid != parent:
            continue
        for arg in argv[:2]:
            name = Path(arg.decode(errors="replace")).name
            if name.startswith("pipeops-"):
                found[name.removeprefix("pipeops-")] = int(entry.name)
                break
    return found


def compile_bytecode() -> None:
    """Compile what is not yet (the venv's packages, the workspace's sources), as the images
    do (``UV_COMPILE_BYTECODE``, and ``-OO`` for the services' ``PYTHONOPTIMIZE=2``): a
    process that compiles its sources at start keeps ~2 MiB more resident than one that
    reads ``.pyc`` files, and ``PYTHONDONTWRITEBYTECODE`` (set on this machine) keeps a
    process from writing them itself."""
    site = [p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix)]
    sources = [str(p) for p in (*ROOT.glob("libs/*/src"), *ROOT.glob("services/*/src"),
                                *ROOT.glob("dev/*/src"))]
    for optimize in ([], ["-OO"]):
        subprocess.run([sys.executable, *optimize, "-m", "compileall", "-q", "-j", "0", *site,
                        *sources], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)


def import_floor(module: str) -> float:
    """MiB resident after importing ``module`` in a fresh interpreter (nothing run)."""
    code = (f"import {module}\n"
            "for line in open('/proc/self/status'):\n"
            "    if line.startswith('VmRSS'): print(int(line.split()[1]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, cwd=ROOT, env={**os.environ, **IMAGE_ENV})
    return int(done.stdout.strip() or 0) / 1024 if done.returncode == 0 else float("nan")


def wait_endpoints(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return dict(json.loads(path.read_text()))
        if proc.poll() is not None:
            raise RuntimeError(f"run.py exited with {proc.returncode}")
        time.sleep(0.2)
    raise RuntimeError("run.py did not come up")


def load(endpoints: dict[str, Any], rounds: int) -> list[str]:
    """A light load on every container; returns what was done (for the report)."""
    done = []
    http = endpoints["http_api"]["url"]
    for _ in range(rounds * 20):
        with urllib.request.urlopen(f"{http}/health", timeout=5) as reply:
            reply.read()
    done.append(f"{rounds * 20} GET /health to the http-api")
    kubeconfig = endpoints.get("tunnel", {}).get("kubeconfig")
    if kubeconfig and KUBECTL:
        for _ in range(rounds):
            subprocess.run([KUBECTL, "--kubeconfig", kubeconfig, "get", "pods", "-A", "-o",
                            "name"], capture_output=True, check=True, timeout=60)
        done.append(f"{rounds} `kubectl get pods -A` through the tunnel (kubernetes-api)")
    grpcurl = BIN / "grpcurl"
    if grpcurl.exists():
        for address in endpoints.get("grpc", {}).values():
            for _ in range(rounds):
                subprocess.run([str(grpcurl), "-plaintext", address, "list"],
                               capture_output=True, check=False, timeout=30)
        done.append(f"{rounds} gRPC reflection listings per service")
    forward = agent_http_port(endpoints)
    if forward:
        mib = 8 * rounds
        with socket.create_connection(("127.0.0.1", forward), timeout=30) as sock:
            request = (f"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: {mib << 20}\r\n"
                       "Connection: close\r\n\r\n").encode()
            sock.sendall(request)
            chunk = b"\0" * (1 << 20)
            try:
                for _ in range(mib):
                    sock.sendall(chunk)
            except OSError:
                pass  # the http-api may answer (405) and close before the body is in
        done.append(f"a {mib} MiB request body through the tunnel's agent-http forward")
    return done


def agent_http_port(endpoints: dict[str, Any]) -> int:
    cp = endpoints.get("controlplane", {}).get("url")
    if not cp:
        return 0
    with urllib.request.urlopen(f"{cp}/debug/tunnels", timeout=5) as reply:
        tunnels = json.loads(reply.read())
    for view in tunnels.get("clusters", []):
        for fwd in view.get("forwards", []):
            if fwd.get("name") == "agent-http":
                return int(fwd["remote_port"])
    return 0


def measure(idle: float, tls: bool, rounds: int) -> tuple[dict[str, Any], list[str]]:
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        argv = [sys.executable, str(ROOT / "scripts" / "run.py"), "--free-ports", "--quiet",
                "--run-dir", tmp, *(["--tunnel-tls"] if tls else [])]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            endpoints = wait_endpoints(Path(tmp) / "endpoints.json", proc, 120)
            time.sleep(idle)  # "idle for 10 s", as the issue measures it
            pids = children(proc.pid)
            idle_kib = {name: status_kib(pid) for name, pid in pids.items()}
            done = load(endpoints, rounds)
            time.sleep(2)
            loaded_kib = {name: status_kib(pid) for name, pid in pids.items()}
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return {"idle": idle_kib, "loaded": loaded_kib}, done


def render(result: dict[str, Any], floors: dict[str, float], done: list[str], argv: str,
           idle: float, tls: bool) -> str:
    mib = lambda kib: kib / 1024  # noqa: E731
    idle_kib, loaded = result["idle"], result["loaded"]
    lines = [
        "# Memory benchmark",
        "",
        f"Generated by `{argv}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f" ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}). `scripts/run.py"
        f" --free-ports{' --tunnel-tls' if tls else ''}` (kubesim, the dev control plane,"
        f" the four services; the tunnel over {'wss://' if tls else 'ws://'}), idle"
        f" {idle:.0f} s, then `VmRSS` from `/proc/PID/status` of each service. Budgets:"
        " issue 15. `import` is the service's entry module imported in a fresh interpreter"
        " (nothing running): the rest of idle is what running costs.",
        "",
        "| container | idle VmRSS MiB | budget | met | anon / file MiB | import MiB |"
        " loaded VmRSS MiB | peak VmHWM MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    pod_idle = pod_loaded = 0.0
    for name in sorted(idle_kib, key=lambda n: (n not in POD, POD.index(n) if n in POD else 0,
                                                 n)):
        i, lo = idle_kib[name], loaded.get(name, {})
        budget = BUDGET_MIB.get(name)
        if name in POD:
            pod_idle += mib(i["VmRSS"])
            pod_loaded += mib(lo.get("VmRSS", 0))
        met = ("yes" if mib(i["VmRSS"]) <= budget else "**no**") if budget else "-"
        floor = floors.get(name)
        lines.append(
            f"| {name}{'' if name in POD else ' (not in the pod)'} | {mib(i['VmRSS']):.1f} |"
            f" {budget or '-'} | {met} | {mib(i.get('RssAnon', 0)):.1f} /"
            f" {mib(i.get('RssFile', 0)):.1f} | {f'{floor:.1f}' if floor else '-'} |"
            f" {mib(lo.get('VmRSS', 0)):.1f} | {mib(lo.get('VmHWM', 0)):.1f} |")
    met = "yes" if pod_idle <= POD_BUDGET_MIB else "**no**"
    lines += [f"| **pod** (the four) | {pod_idle:.1f} | {POD_BUDGET_MIB} | {met} | | |"
              f" {pod_loaded:.1f} | |", "", "Load: " + "; ".join(done) + "."]
    if NOTES.exists():
        lines += ["", NOTES.read_text().rstrip()]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle before reading")
    parser.add_argument("--rounds", type=int, default=5, help="load rounds")
    parser.add_argument("--plain-ws", action="store_true", help="the tunnel over ws://")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    compile_bytecode()
    result, done = measure(args.idle, not args.plain_ws, args.rounds)
    floors = {name: import_floor(module) for name, module in ENTRY.items()
              if name in result["idle"]}
    argv = " ".join([".venv/bin/python", "bench/memory.py", *sys.argv[1:]])
    text = render(result, floors, done, argv, args.idle, not args.plain_ws)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    # bench/soak.py's section (idle and under the soak's load) stays
    args.output.write_text(carry(args.output.read_text() if args.output.exists() else "", text))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
