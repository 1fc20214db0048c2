"""The tunnel's two backoffs, driven in-process with scripted connection attempts:
STALE_AFTER attempts in a row before hello_ack ask for the allocation again, a hello_ack
starts that count over, a connection that lasted RESET_AFTER seconds (or was drained)
starts the reconnect backoff over, and refusals in a row back off between allocations
until a hello_ack makes the next one immediate. tenacity's attempt numbers are read from
the log lines the retries write."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

import pytest

from agentkit.config import from_mapping
from agentkit.controlplane import TunnelStatus
from agentkit.events import EventBus
from agentkit.grpcclient import Siblings
from agentkit.identity import Identity
from agentkit.runner import ServiceContext
from agentkit.status import ServiceStatus
from pipeops_tunnel import agent as tunnel_agent
from pipeops_tunnel.agent import STALE_AFTER, TunnelAgent
from pipeops_tunnel.connection import ConnectionLost, Drained, HandshakeRefused
from pipeops_tunnel.state import TunnelState

READY = TunnelStatus(status="ready", tunnel_url="ws://127.0.0.1:1/tunnel")
IDENTITY = Identity(agent_id="a", cluster_id="c", cluster_token="t" * 12, state="registered")
Step = Callable[["TunnelAgent"], None]


class Done(BaseException):
    """The script ran out: ends the loop under test."""


def fail(agent: TunnelAgent) -> None:
    raise OSError("connection refused")


def ack_then_lose(after: float) -> Step:
    def step(agent: TunnelAgent) -> None:
        agent._acks += 1  # what _session_changed does on hello_ack
        raise ConnectionLost("connection lost", after)
    return step


def drained(agent: TunnelAgent) -> None:
    agent._acks += 1
    raise Drained("drained", 1.0)


def agent_with(script: list[Step]) -> TunnelAgent:
    config = from_mapping({"pipeops": {"reconnect": {"backoff_base": 0.001,
                                                      "backoff_max": 0.002}}})
    bus = EventBus("tunnel")
    ctx = ServiceContext(name="tunnel", config=config, args=argparse.Namespace(), bus=bus,
                         status=ServiceStatus("tunnel", "0", bus), siblings=Siblings(config))
    agent = TunnelAgent(ctx, TunnelState(ctx.status), {})
    steps = iter(script)

    async def connect_once(allocation: TunnelStatus) -> None:
        step = next(steps, None)
        if step is None:
            raise Done
        step(agent)

    agent._connect_once = connect_once  # type: ignore[method-assign]
    return agent


def attempts(caplog: pytest.LogCaptureFixture, what: str) -> list[Any]:
    return [getattr(r, "attempt", None) for r in caplog.records
            if what in r.getMessage() and hasattr(r, "attempt")]


async def _keep_connected(agent: TunnelAgent) -> BaseException:
    try:
        await agent._keep_connected(READY)
    except BaseException as exc:
        return exc
    raise AssertionError("_keep_connected returned")


async def test_attempts_in_a_row_before_hello_ack_ask_for_the_allocation_again() -> None:
    agent = agent_with([fail] * STALE_AFTER)
    exc = await _keep_connected(agent)
    assert isinstance(exc, HandshakeRefused) and f"{STALE_AFTER} connection attempts" in str(exc)


async def test_a_hello_ack_starts_the_stale_count_over() -> None:
    agent = agent_with([fail, ack_then_lose(1.0)] + [fail] * (STALE_AFTER - 1))
    assert isinstance(await _keep_connected(agent), Done)  # never called stale
    agent = agent_with([fail, ack_then_lose(1.0)] + [fail] * STALE_AFTER)
    assert isinstance(await _keep_connected(agent), HandshakeRefused)


@pytest.mark.parametrize("ending", ["lasted", "drained", "short"])
async def test_a_connection_that_lasted_starts_the_backoff_over(
        ending: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG, logger="pipeops_tunnel.agent")
    monkeypatch.setattr(tunnel_agent, "RESET_AFTER", 5.0)
    middle = {"lasted": ack_then_lose(5.0), "drained": drained,
              "short": ack_then_lose(4.9)}[ending]
    agent = agent_with([fail, fail, middle, fail])
    assert isinstance(await _keep_connected(agent), Done)
    numbers = attempts(caplog, "the tunnel connection failed")
    if ending == "short":  # an ordinary failure: the count goes on
        assert numbers == [1, 2, 3, 4]
    else:
        assert numbers == [1, 2, 1]


async def test_refusals_in_a_row_back_off_and_a_hello_ack_makes_the_next_immediate(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pipeops_tunnel.agent")
    agent = agent_with([])
    rounds: list[str] = []

    async def allocate_and_connect(allocations: object) -> None:
        step = ["refused", "refused", "acked-then-refused", "refused", "done"][len(rounds)]
        rounds.append(step)
        if step == "done":
            raise Done
        if step.startswith("acked"):
            agent._acks += 1
        raise HandshakeRefused(f"tunnel handshake refused with HTTP 410 ({step})")

    async def identity_ready() -> Identity:
        return IDENTITY

    agent._allocate_and_connect = allocate_and_connect  # type: ignore[method-assign]
    agent.identity.wait_ready = identity_ready  # type: ignore[method-assign]
    agent.session_status.run = _idle  # type: ignore[method-assign]
    agent.identity.run = _idle  # type: ignore[method-assign]
    with pytest.raises(Done):
        await agent.run()
    backed_off = attempts(caplog, "asking for the allocation again in")
    assert backed_off == [1, 2, 1]  # the round after the hello_ack starts over
    assert sum("asking for the allocation again now" in r.getMessage()
               for r in caplog.records) == 1


async def _idle() -> None:
    import asyncio

    await asyncio.Event().wait()
