"""One command runner, two doors: a command from the tunnel (``handle``) and the same
over gRPC (``run``, behind ``Tunnel.RunCommand``) share validation, the id memory and
the limit of commands in flight, and each outcome goes back through its own door."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipeops_tunnel.commands import CommandRunner
from pipeops_tunnel.sessions import CommandFailed
from tests.tunnel.agent_helpers import until


class FakeSessions:
    """Stands in for the Kubernetes side: records each run, can be held or made to fail."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def run(self, action: str, payload: Any) -> dict[str, Any]:
        self.runs.append((action, payload.session_id))
        await self.gate.wait()
        if payload.session_id == "boom":
            raise CommandFailed("deployments \"session-boom\" not found")
        return {"sessionId": payload.session_id, "action": action}


def runner_with(sessions: FakeSessions, **kw: Any) -> tuple[CommandRunner, list[dict[str, Any]]]:
    async def get() -> FakeSessions:
        return sessions

    runner = CommandRunner(get, **kw)  # type: ignore[arg-type]
    sent: list[dict[str, Any]] = []
    runner.attach(sent.append)
    return runner, sent


async def wait_sent(sent: list[dict[str, Any]], kind: str, command_id: str) -> dict[str, Any]:
    return await until(lambda: next((m for m in sent if m["type"] == kind
                                     and m.get("id") == command_id), None),
                       5, f"{kind} {command_id}")


async def test_both_doors_give_the_same_outcome_through_the_same_runner() -> None:
    sessions = FakeSessions()
    runner, sent = runner_with(sessions)
    payload = {"sessionId": "s1"}
    runner.handle({"type": "command", "id": "t1", "action": "wake_session", "payload": payload})
    over_tunnel = await wait_sent(sent, "complete", "t1")
    over_grpc = await runner.run("g1", "wake_session", payload)
    assert over_grpc == {**over_tunnel, "id": "g1"}
    assert sessions.runs == [("wake_session", "s1"), ("wake_session", "s1")]
    # the gRPC outcome went to its caller only, not to the control plane
    assert [m for m in sent if m.get("id") == "g1"] == []

    failed = await runner.run("", "wake_session", {"sessionId": "boom"})
    assert failed["type"] == "failed" and "not found" in failed["error"]
    assert failed["id"].startswith("local-")
    refused = await runner.run("", "no_such_action", {})
    assert refused["type"] == "failed" and "unknown action" in refused["error"]
    invalid = await runner.run("", "wake_session", {"sessionId": "NOT VALID"})
    assert invalid["type"] == "failed" and "sessionId" in invalid["error"]


async def test_an_id_is_run_once_whichever_door_it_comes_through() -> None:
    sessions = FakeSessions()
    runner, sent = runner_with(sessions)
    runner.handle({"type": "command", "id": "same", "action": "wake_session",
                   "payload": {"sessionId": "s2"}})
    first = await wait_sent(sent, "complete", "same")
    again = await runner.run("same", "wake_session", {"sessionId": "s2"})
    assert again == first
    assert len(sessions.runs) == 1


async def test_callers_waiting_on_a_running_id_share_its_outcome() -> None:
    sessions = FakeSessions()
    sessions.gate.clear()
    runner, _ = runner_with(sessions)
    one = asyncio.create_task(runner.run("held", "hibernate_session", {"sessionId": "s3"}))
    two = asyncio.create_task(runner.run("held", "hibernate_session", {"sessionId": "s3"}))
    await until(lambda: sessions.runs, 5, "the command to start")
    sessions.gate.set()
    assert (await one) == (await two)
    assert sessions.runs == [("hibernate_session", "s3")]


async def test_a_caller_that_gives_up_leaves_the_command_running() -> None:
    sessions = FakeSessions()
    sessions.gate.clear()
    runner, _ = runner_with(sessions)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await runner.run("slow", "wake_session", {"sessionId": "s4"})
    assert runner.running == 1
    sessions.gate.set()
    outcome = await runner.run("slow", "wake_session", {"sessionId": "s4"})
    assert outcome["type"] == "complete"
    assert len(sessions.runs) == 1


async def test_the_limit_in_flight_is_shared_by_both_doors() -> None:
    sessions = FakeSessions()
    sessions.gate.clear()
    runner, sent = runner_with(sessions, max_running=1)
    runner.handle({"type": "command", "id": "t-held", "action": "wake_session",
                   "payload": {"sessionId": "s5"}})
    refused = await runner.run("g-more", "wake_session", {"sessionId": "s6"})
    assert refused["type"] == "failed" and "too many commands" in refused["error"]
    sessions.gate.set()
    await wait_sent(sent, "complete", "t-held")
    ok = await runner.run("g-more", "wake_session", {"sessionId": "s6"})  # forgotten: runs
    assert ok["type"] == "complete"


async def test_an_overlong_id_is_refused() -> None:
    runner, _ = runner_with(FakeSessions())
    with pytest.raises(ValueError, match="longer than"):
        await runner.run("x" * 300, "wake_session", {"sessionId": "s7"})
