"""A hostile control plane does not decide how much the agent logs: 20,000 bad commands
and as many invalid text messages, sent to the real tunnel process, give a handful of
warning lines that count the rest, and every one of them still gets its answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kubesim.testing import Kubesim
from tests.tunnel.agent_helpers import (
    FakeControlPlane,
    TunnelRun,
    eventually,
    kubesim_with_namespace,
    until,
    write_identity,
)

FLOOD = 20_000


@pytest.fixture(scope="module")
def kubesim() -> Iterator[Kubesim]:
    with kubesim_with_namespace("pipeops-sessions") as ks:
        yield ks


@pytest.fixture
async def cp() -> AsyncIterator[FakeControlPlane]:
    plane = await FakeControlPlane().start()
    yield plane
    await plane.stop()


@pytest.fixture
async def tunnel(cp: FakeControlPlane, kubesim: Kubesim, state_dir: Path
                 ) -> AsyncIterator[TunnelRun]:
    run = TunnelRun(cp.url, state_dir, forwards={"agent-http": "127.0.0.1:9"},
                    kubeconfig=kubesim.kubeconfig).start()
    try:
        await run.started()
        write_identity(state_dir)
        await cp.wait_connected()
        yield run
    finally:
        await asyncio.to_thread(run.stop)


async def test_a_flood_of_bad_commands_and_invalid_text_is_a_few_counted_lines(
        cp: FakeControlPlane, tunnel: TunnelRun) -> None:
    session = cp.sessions[-1]
    for n in range(FLOOD):
        session.send_control({"type": "command", "id": f"bad-{n}", "action": "start_session",
                              "payload": {"sessionId": "NOT_VALID", "template": "x"}})
        if n % 500 == 0:
            await asyncio.sleep(0)  # let the writer go; the reply path is bounded anyway
    # every one was refused (a reply dropped on the bounded reply path is still counted)
    failed = "pipeops_tunnel_commands_total{action=start_session,result=failed}"
    await eventually(tunnel.metrics, lambda m: m.get(failed, 0) >= FLOOD, 120,
                     "every bad command refused")
    # and invalid text: answered with an error each, the connection stays
    invalid = ["{not json", "[" * 100_000, json.dumps({"no": "type"})] * 100
    for text in invalid:
        await cp.connections[-1].send(text)
    await until(lambda: sum(m.get("type") == "error" for m in cp.messages) >= 50, 60,
                "error replies to the invalid text")
    assert not session.closed

    records = tunnel.records()
    refused = [r for r in records if r.get("msg", "").startswith("command refused")]
    # the burst (5), then the count at 50, 500, 5000 held back: not one line a command
    assert 5 <= len(refused) <= 9, len(refused)
    assert refused[-1]["suppressed"] >= 4997
    assert "not logged so far" in refused[-1]["msg"]
    invalid_lines = [r for r in records if "invalid control message" in r.get("msg", "")]
    assert 1 <= len(invalid_lines) <= 9, len(invalid_lines)
    warnings = [r for r in records if r.get("level") in ("warning", "error")]
    assert len(warnings) <= 25, [r["msg"] for r in warnings][:30]
