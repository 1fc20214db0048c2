"""A root task that dies takes the service down: one error line naming it, exit 1 (so the
kubelet restarts the container). Real processes: a service built with agentkit.runner
(tests/services/dying_service.py), and SIGTERM still drains as before."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.helpers import ServiceProcess

SERVICE = Path(__file__).with_name("dying_service.py")


def dying(state_dir: Path, *extra: str) -> ServiceProcess:
    return ServiceProcess([sys.executable, str(SERVICE), "--grpc-port", "0",
                           "--state-dir", str(state_dir), *extra])


def test_a_root_task_that_raises_exits_the_service_with_one_error_line(
        state_dir: Path) -> None:
    with dying(state_dir, "--die-after", "0.3") as proc:
        assert proc.proc is not None
        assert proc.proc.wait(timeout=15) == 1
        proc.stop()
    errors = [r for r in proc.records() if r["level"] == "error"]
    assert len(errors) == 1, errors
    assert errors[0]["msg"] == ("root task test:doomed died: RuntimeError: injected fault; "
                                "stopping")
    assert "injected fault" in errors[0]["exc"]  # the traceback, in the same line
    assert proc.records()[-1] == {**proc.records()[-1], "msg": "stopped", "exit_code": 1}
    assert not proc.stderr_lines, proc.stderr_lines


def test_a_root_task_that_returns_leaves_the_service_running(state_dir: Path) -> None:
    with dying(state_dir, "--die-after", "0", "--finish") as proc:
        proc.wait_started()
        proc.wait_record(lambda r: r.get("msg") == "the doomed task finished its job",
                         what="the task's return")
        assert proc.proc is not None and proc.proc.poll() is None
        assert proc.terminate(timeout=10) == 0
    # still running when the signal came: it stopped because of it
    assert "stopping on signal" in [r["msg"] for r in proc.records()]
    assert not [r for r in proc.records() if r["level"] == "error"]
    assert proc.stop_seconds() < 2.0


def test_sigterm_before_the_death_drains_and_exits_0(state_dir: Path) -> None:
    with dying(state_dir, "--die-after", "60") as proc:
        proc.wait_started()
        assert proc.terminate(timeout=10) == 0
    assert [r["msg"] for r in proc.records()][-1] == "stopped"
    assert not [r for r in proc.records() if r["level"] == "error"]
