"""``make run``'s orchestrator: each thing a person wants is announced on a human line as
soon as it answers, and each printed command works as printed; endpoints.json holds the
same lines; no log holds a token; Ctrl-C stops every process it started and removes the
file."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers import ROOT, alive, child_pids, tool, wait_for

LINE = re.compile(r"^make run \| (\S+) +(.*)$")
LABELS = {"cluster", "grpc", "dashboard", "kubectl", "demo"}


def stop(proc: subprocess.Popen[str]) -> None:
    """After a failure too: run.py stops its children on SIGINT; if it cannot, they are
    killed here (SIGKILL to run.py alone would leave them running, in their own
    sessions, for ever)."""
    children = {pid: _started(pid) for pid in child_pids(proc.pid)}
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid, when in children.items():
        if when is not None and _started(pid) == when and alive(pid):  # not a reused pid
            os.kill(pid, signal.SIGKILL)


def _started(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def run(text: str, *more: str) -> subprocess.CompletedProcess[str]:
    """A printed line run as a person would paste it at the repository's root (``more``
    appended: ``-o name`` leaves out the pods' age)."""
    return subprocess.run([*shlex.split(text, comments=True), *more], cwd=ROOT,
                          capture_output=True, text=True, timeout=30, check=False)


def test_run_announces_each_endpoint_and_cleans_up_on_ctrl_c(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "run.py"), "--free-ports", "--quiet",
         "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    printed: list[str] = []
    errors: list[str] = []
    readers = [threading.Thread(target=lambda s=stream, out=out: out.extend(s), daemon=True)
               for stream, out in ((proc.stdout, printed), (proc.stderr, errors))]
    for reader in readers:
        reader.start()
    endpoints_path = run_dir / "endpoints.json"
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"run.py exited {proc.returncode}: {''.join(errors)}")
            # the file is written before the last line is printed: wait for both
            return endpoints_path.exists() and any("| up " in line for line in printed)

        wait_for(ready, timeout=90, what="endpoints.json and the 'up' line")
        endpoints = json.loads(endpoints_path.read_text())
        assert {"kubesim", "controlplane", "grpc", "http_api", "tunnel", "gateway",
                "lines"} <= endpoints.keys()
        # the dashboard token is in it: readable by its owner only, as the kubeconfig
        assert oct(endpoints_path.stat().st_mode & 0o777) == "0o600"

        # Quiet: stdout is the human lines only, one per label, each as endpoints.json
        # holds it, the "up" line last.
        said = [LINE.match(line.rstrip("\n")) for line in printed]
        assert all(said), printed
        labels = [m.group(1) for m in said if m]
        assert sorted(labels) == sorted([*LABELS, "up"]) and labels[-1] == "up", labels
        lines = {m.group(1): m.group(2) for m in said if m and m.group(1) != "up"}
        assert lines == endpoints["lines"]
        assert str(endpoints_path) in printed[-1]

        api = endpoints["http_api"]
        assert api["dashboard"] == api["url"] + "/dashboard" and len(api["token"]) >= 24
        assert lines["dashboard"].split() == [api["dashboard"], "token", api["token"]]
        with urllib.request.urlopen(api["dashboard"], timeout=5) as r:
            assert b"pipeops-agent" in r.read()
        status = urllib.request.Request(api["url"] + "/api/agent/status",
                                        headers={"Authorization": f"Bearer {api['token']}"})
        with urllib.request.urlopen(status, timeout=30) as r:
            assert json.load(r)["identity"]

        # grpcurl, as printed: the registrar describes itself; the others answer health
        assert endpoints["grpc"]["registrar"] in lines["grpc"]
        described = run(lines["grpc"])
        assert described.returncode == 0, described.stderr
        assert json.loads(described.stdout)["name"] == "registrar", described.stdout
        for name in ("tunnel", "gateway"):
            assert f"{name} {endpoints['grpc'][name]}" in lines["grpc"]
            check = run(f"{tool('grpcurl')} -plaintext {endpoints['grpc'][name]} "
                        "grpc.health.v1.Health/Check")
            assert json.loads(check.stdout) == {"status": "SERVING"}, check.stderr
        assert f"http-api {api['grpc']}" in lines["grpc"]

        def heartbeating() -> list[dict[str, Any]] | None:
            with urllib.request.urlopen(endpoints["controlplane"]["url"] + "/debug/clusters",
                                        timeout=5) as r:
                clusters: list[dict[str, Any]] = json.load(r)
            beat = clusters[0]["last_heartbeat"] if clusters else None
            # The registrar asks the tunnel over gRPC: "connected" proves both siblings.
            return clusters if beat and beat["tunnel_status"] == "connected" else None

        wait_for(heartbeating, timeout=30, what="a heartbeat saying the tunnel is connected")

        # kubectl, as printed: the cluster directly, then the same through the tunnel
        assert endpoints["kubesim"]["kubeconfig"] in lines["cluster"]
        assert endpoints["tunnel"]["kubeconfig"] in lines["kubectl"]
        direct, through = run(lines["cluster"], "-o", "name"), run(lines["kubectl"], "-o", "name")
        assert direct.returncode == 0 and through.returncode == 0, (direct.stderr,
                                                                    through.stderr)
        assert "pod/demo-7d4b9c-abcde" in direct.stdout.split()
        assert through.stdout == direct.stdout
        # The registrar keeps the identity in the cluster too (a new pod resumes from it).
        state = subprocess.run(
            [tool("kubectl"), "--kubeconfig", endpoints["kubesim"]["kubeconfig"], "get",
             "secrets,configmaps", "-n", "pipeops-system", "-o", "name"],
            capture_output=True, text=True, timeout=30, check=False)
        assert state.returncode == 0, state.stderr
        assert "secret/" in state.stdout and "configmap/" in state.stdout, state.stdout

        # curl, as printed: the demo Ingress answers through the control plane's public
        # listener, served by the small app make run started, reached through the tunnel.
        gateway = endpoints["gateway"]
        assert gateway["demo_host"] == "demo.example.test"
        assert f"curl -H 'Host: demo.example.test' {gateway['public_url']}/" in lines["demo"]
        demo = run(lines["demo"].replace("curl ", "curl -sS -m 10 ", 1))
        assert demo.returncode == 0, demo.stderr
        answer = json.loads(demo.stdout)
        assert (answer["app"], answer["host"], answer["path"]) == ("demo", "demo.example.test",
                                                                   "/")
        routes = json.load(urllib.request.urlopen(
            endpoints["controlplane"]["url"] + "/debug/routes", timeout=5))["routes"]
        assert [(r["hostname"], r["registrations"], r["duplicates"]) for r in routes] == [
            ("demo.example.test", 1, 0)]

        children = child_pids(proc.pid)
        assert len(children) >= 7  # kubesim, control plane, demo app, four services
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert not endpoints_path.exists()
        wait_for(lambda: not any(alive(pid) for pid in children), timeout=10,
                 what="every child to exit")
        for reader in readers:
            reader.join(timeout=10)  # EOF: run.py and the children are gone
        # After the whole run (startup, traffic, shutdown): no log holds a token, and the
        # terminal shows only the dashboard's, which it is there to hand out.
        tokens = assert_no_token_in_logs(run_dir, dashboard=api["token"])
        terminal = "".join(printed + errors)
        for name, token in tokens.items():
            leaked = token in terminal
            assert not leaked, f"the {name} token is on the terminal"
    finally:
        stop(proc)
        for reader in readers:
            reader.join(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def assert_no_token_in_logs(run_dir: Path, dashboard: str) -> dict[str, str]:
    """Every log file is 0600 (as the kubeconfig with the admin token is) and holds none of
    the tokens in play: kubesim's admin token, the install token, the cluster token, the
    dashboard token. Returns the ones the terminal must not show either."""
    identity = json.loads((run_dir / "state" / "identity.json").read_text())["data"]
    tokens = {"kubesim admin": (run_dir / "serviceaccount" / "token").read_text().strip(),
              "install": "dev-install-token", "cluster": identity["cluster_token"]}
    assert all(tokens.values()), tokens.keys()
    logs = sorted((run_dir / "logs").glob("*.log"))
    assert {p.name for p in logs} >= {"kubesim.log", "controlplane.log", "tunnel.log",
                                      "http-api.log"}
    for path in logs:
        assert oct(path.stat().st_mode & 0o777) == "0o600", path
        text = path.read_text()
        for name, token in {**tokens, "dashboard": dashboard}.items():
            leaked = token in text  # not in the assertion: a failure must not print it
            assert not leaked, f"the {name} token is in {path.name}"
    kubesim_log = (run_dir / "logs" / "kubesim.log").read_text()
    assert '"event": "ready"' in kubesim_log  # the line is there, its token masked
    assert '"token": "***"' in kubesim_log
    return tokens


def test_ctrl_c_while_starting_stops_everything_at_once(tmp_path: Path) -> None:
    """Ctrl-C right after the first line (the services still starting): run.py exits 0
    without waiting for the rest to come up, and no process it started is left."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "run.py"), "--free-ports", "--quiet",
         "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the cluster line (or EOF)
        assert first.startswith("make run | cluster "), (first, proc.stderr.read())
        # the four services are started right after that line, and take seconds to import
        def all_started() -> list[int] | None:
            found = child_pids(proc.pid)
            return found if len(found) >= 7 else None

        children = wait_for(all_started, timeout=10, what="all seven children started")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "| up " not in out and not (run_dir / "endpoints.json").exists()
        wait_for(lambda: not any(alive(pid) for pid in children), timeout=10,
                 what="every child to exit")
    finally:
        stop(proc)
        proc.communicate()
