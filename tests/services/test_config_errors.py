"""A configuration mistake, in every service's real process: exit 2 and exactly one line
that names it; no traceback, no usage dump, no token echoed, nothing left running in a
broken state. The cases are the ones found by trying (issue 14): a config file that is
not UTF-8, an ``api_url`` whose host or port cannot be parsed, a ``state_dir`` that is a
file, a gRPC or metrics port in use, durations of ``.inf`` or ``1e12``, a boolean where a
port is expected, a section given as a scalar while an env var sets one of its keys, a
token with non-ASCII characters, a command-line mistake."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import free_port, tool

SERVICES = ["registrar", "tunnel", "gateway", "http-api"]
TOKEN = "pit_config_case_token_0123456789abcdef"


@dataclass
class Case:
    """What to run: a config file's text (or bytes), env, extra args; and the words the
    one line must hold."""

    says: str
    config: str | bytes | None = None
    env: dict[str, str] = field(default_factory=dict)
    args: Callable[[Path, str], list[str]] = lambda _tmp, _svc: []
    http_port: bool = True  # the http-api gets a free --port (which beats the file's)


def _state_file(tmp: Path, _service: str) -> list[str]:
    path = tmp / "not-a-dir"
    path.write_text("x")
    return ["--state-dir", str(path)]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


CASES: dict[str, Case] = {
    "config not utf-8": Case("not UTF-8", config=b"agent:\n  cluster_name: caf\xe9\n"),
    "api_url host unparsable": Case("pipeops.api_url", env={"PIPEOPS_API_URL": "http://[::1"}),
    "api_url port out of range": Case("Port out of range",
                                      env={"PIPEOPS_API_URL": "http://127.0.0.1:99999"}),
    "state_dir is a file": Case("expected a directory", args=_state_file),
    "duration .inf": Case("pipeops.heartbeat_interval",
                          config="pipeops:\n  heartbeat_interval: .inf\n"),
    "duration 1e12": Case("at most", config="pipeops:\n  timeout: 1.0e+12\n"),
    "port true": Case("expected an integer, not true/false", config="agent:\n  port: true\n",
                      http_port=False),
    "section as a scalar": Case("expected a mapping of settings", config="tunnel: 5\n",
                                env={"PIPEOPS_TUNNEL_ENABLED": "false"}),
    "token not ascii": Case("non-ASCII", env={"PIPEOPS_TOKEN": TOKEN + "\u00e9"}),
    "argparse error": Case("unrecognized arguments: --no-such-flag",
                           args=lambda _t, _s: ["--no-such-flag"]),
    "ca bundle missing": Case("cannot load a CA bundle from it",
                              env={"PIPEOPS_API_URL": "https://127.0.0.1:9"},
                              args=lambda t, _s: ["--set", f"pipeops.tls.ca_file={t}/no-ca.crt"]),
    "shutdown grace inf": Case("--shutdown-grace", args=lambda _t, _s: ["--shutdown-grace",
                                                                       "inf"]),
}


def run(service: str, tmp: Path, case: Case, extra: list[str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    argv = [tool(f"pipeops-{service}"), "--grpc-port", "0", "--state-dir", str(tmp / "state"),
            "--set", "metrics.registrar=0", "--set", "metrics.tunnel=0",
            "--set", "metrics.gateway=0"]
    if service == "http-api":
        argv += ["--host", "127.0.0.1"] + (["--port", str(free_port())] if case.http_port
                                           else [])
    if case.config is not None:
        path = tmp / "config.yaml"
        if isinstance(case.config, bytes):
            path.write_bytes(case.config)
        else:
            path.write_text(case.config)
        argv += ["--config", str(path)]
    argv += case.args(tmp, service) + (extra or [])
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIPEOPS_", "GATEWAY_", "KUBERNETES_"))}
    env.update({"HOME": str(tmp), "PIPEOPS_TOKEN": TOKEN, **case.env})
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env,
                          check=False)


def problem_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr's lines and the error-level log lines: what says what went wrong."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    for line in done.stdout.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            lines.append(line)  # not a log line: stray output
            continue
        if record.get("level") in ("error", "critical"):
            lines.append(record["msg"])
    return lines


def assert_one_clean_line(done: subprocess.CompletedProcess[str], says: str) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    lines = problem_lines(done)
    assert len(lines) == 1, lines
    assert says in lines[0], lines
    assert "Traceback" not in output
    assert TOKEN not in output


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("name", list(CASES))
def test_a_config_mistake_is_exit_2_and_one_line(name: str, service: str,
                                                 tmp_path: Path) -> None:
    case = CASES[name]
    assert_one_clean_line(run(service, tmp_path, case), case.says)


@pytest.mark.parametrize("service", SERVICES)
def test_a_grpc_port_in_use_is_exit_2_and_one_line(service: str, tmp_path: Path,
                                                   taken_port: int) -> None:
    done = run(service, tmp_path, Case(""), ["--grpc-port", str(taken_port)])
    assert_one_clean_line(done, f"cannot serve gRPC on 127.0.0.1:{taken_port}: "
                                "Address already in use")


@pytest.mark.parametrize("service", ["registrar", "tunnel"])  # those that serve metrics
def test_a_metrics_port_in_use_is_exit_2_and_one_line(service: str, tmp_path: Path,
                                                      taken_port: int) -> None:
    done = run(service, tmp_path, Case(""), ["--set", f"metrics.{service}={taken_port}"])
    assert_one_clean_line(done, f"cannot serve metrics on 127.0.0.1:{taken_port}: "
                                "Address already in use")
