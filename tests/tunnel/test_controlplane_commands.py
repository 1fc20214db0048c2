"""Commands over the tunnel (PROTOCOL.md section 3), the control plane's end:
``POST /api/v1/agents/{id}/command`` sends ``command {id, action, payload}`` and returns the
outcome the agent reports (``ack``, then ``complete``/``failed``), or 202 and a record to
read later. The agent here is the test's own (``MiniAgent``) answering as the test says.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pipeops_controlplane.testing import ControlPlane
from tests.helpers import wait_for
from tests.tunnel.e2e_helpers import MiniAgent, http_json


def _answer(agent: MiniAgent, command: dict[str, Any]) -> None:
    """ack at once, then complete (or failed when the payload says so)."""
    agent.send({"type": "ack", "id": command["id"]})
    payload = command["payload"]
    if payload.get("fail"):
        agent.send({"type": "failed", "id": command["id"], "error": payload["fail"]})
    elif not payload.get("hold"):
        agent.send({"type": "complete", "id": command["id"],
                    "result": {"action": command["action"], "echo": payload}})


async def test_a_command_returns_its_outcome(controlplane: ControlPlane,
                                             reg: dict[str, Any]) -> None:
    agent = MiniAgent(reg, on_command=_answer)
    try:
        await agent.connect()
        body = {"action": "start_session", "payload": {"sessionId": "s1"}, "id": "cmd-1"}
        status, record = await http_json(controlplane, "POST",
                                         f"/api/v1/agents/{reg['agent_id']}/command", body)
        assert status == 200, record
        assert record["state"] == "complete" and record["id"] == "cmd-1"
        assert record["result"] == {"action": "start_session", "echo": {"sessionId": "s1"}}
        assert [m["type"] for m in record["history"]] == ["ack", "complete"]
        assert record["acked_at"] and record["finished_at"]
        sent = [m for m in agent.messages if m["type"] == "command"]
        assert sent == [{"type": "command", "id": "cmd-1", "action": "start_session",
                         "payload": {"sessionId": "s1"}}]
        status, again = await http_json(controlplane, "GET",
                                        f"/api/v1/agents/{reg['agent_id']}/commands/cmd-1")
        assert (status, again["state"]) == (200, "complete")
        listed = (await http_json(controlplane, "GET",
                                  f"/api/v1/agents/{reg['agent_id']}/commands"))[1]
        assert [r["id"] for r in listed] == ["cmd-1"]
    finally:
        await agent.close()


async def test_a_failed_command_reports_the_error(controlplane: ControlPlane,
                                                  reg: dict[str, Any]) -> None:
    agent = MiniAgent(reg, on_command=_answer)
    try:
        await agent.connect()
        body = {"action": "wake_session", "payload": {"fail": "deployments \"x\" not found"}}
        # the cluster id names the agent too
        status, record = await http_json(controlplane, "POST",
                                         f"/api/v1/agents/{reg['cluster_id']}/command", body)
        assert status == 200, record
        assert record["state"] == "failed"
        assert record["error"] == 'deployments "x" not found'
        assert record["id"]  # generated when not given
    finally:
        await agent.close()


async def test_an_outcome_can_be_read_later(controlplane: ControlPlane,
                                            reg: dict[str, Any]) -> None:
    agent = MiniAgent(reg, on_command=_answer)
    try:
        await agent.connect()
        url = f"/api/v1/agents/{reg['agent_id']}"
        body = {"action": "hibernate_session", "payload": {"hold": True}, "id": "later",
                "wait": 0}
        status, record = await http_json(controlplane, "POST", f"{url}/command", body)
        assert status == 202 and record["state"] in ("sent", "acked")
        await agent.wait_message(lambda m: m["type"] == "command")
        status, record = await http_json(controlplane, "GET", f"{url}/commands/later?wait=5")
        assert status == 202 and record["state"] == "acked"
        agent.send({"type": "complete", "id": "later", "result": {"replicas": 0}})
        status, record = await http_json(controlplane, "GET", f"{url}/commands/later?wait=5")
        assert (status, record["state"], record["result"]) == (200, "complete", {"replicas": 0})
        assert (await http_json(controlplane, "GET", f"{url}/commands/nope"))[0] == 404
    finally:
        await agent.close()


async def test_resending_an_id_sends_it_again(controlplane: ControlPlane,
                                              reg: dict[str, Any]) -> None:
    agent = MiniAgent(reg, on_command=_answer)
    try:
        await agent.connect()
        url = f"/api/v1/agents/{reg['agent_id']}/command"
        body = {"action": "stop_session", "payload": {"sessionId": "s"}, "id": "same"}
        first = await http_json(controlplane, "POST", url, body)
        second = await http_json(controlplane, "POST", url, body)
        assert first[0] == second[0] == 200
        assert second[1]["sends"] == 2
        assert [m["id"] for m in agent.messages if m["type"] == "command"] == ["same", "same"]
    finally:
        await agent.close()


async def test_a_command_in_flight_is_lost_when_the_tunnel_ends(
        controlplane: ControlPlane, reg: dict[str, Any]) -> None:
    agent = MiniAgent(reg, on_command=_answer)
    try:
        await agent.connect()
        url = f"/api/v1/agents/{reg['agent_id']}"
        body = {"action": "start_session", "payload": {"hold": True}, "id": "held", "wait": 0}
        assert (await http_json(controlplane, "POST", f"{url}/command", body))[0] == 202
        await agent.wait_message(lambda m: m["type"] == "command")
        await agent.close()
        status, record = await http_json(controlplane, "GET", f"{url}/commands/held?wait=10")
        assert (status, record["state"]) == (200, "lost")
        assert "tunnel closed" in record["error"]
        # the agent delivers the outcome on its next connection: the record takes it
        again = MiniAgent(reg)
        try:
            await again.connect()
            again.send({"type": "complete", "id": "held", "result": {"late": True}})

            def completed() -> dict[str, Any] | None:
                found = controlplane.request("GET", f"{url}/commands/held")[1]
                return found if found["state"] == "complete" else None

            late = await asyncio.to_thread(wait_for, completed, 10.0)
            assert late["result"] == {"late": True} and late["error"] is None
        finally:
            await again.close()
    finally:
        await agent.close()


async def test_commands_need_a_known_connected_agent_and_a_valid_body(
        controlplane: ControlPlane, reg: dict[str, Any]) -> None:
    body = {"action": "start_session", "payload": {}}
    status, _ = await http_json(controlplane, "POST", "/api/v1/agents/nobody/command", body)
    assert status == 404
    url = f"/api/v1/agents/{reg['agent_id']}/command"
    status, reply = await http_json(controlplane, "POST", url, body)
    assert status == 409 and "not connected" in reply["detail"]
    assert (await http_json(controlplane, "POST", url, {"payload": {}}))[0] == 422
    assert (await http_json(controlplane, "POST", url, {**body, "wait": -1}))[0] == 422
    assert (await http_json(controlplane, "POST", url, {**body, "extra": 1}))[0] == 422


async def test_a_reply_for_an_unknown_command_is_logged_not_fatal(
        controlplane: ControlPlane, reg: dict[str, Any]) -> None:
    agent = MiniAgent(reg, on_command=_answer)
    try:
        await agent.connect()
        agent.send({"type": "complete", "id": "never-sent", "result": {}})
        body = {"action": "wake_session", "payload": {}, "id": "after"}
        status, record = await http_json(controlplane, "POST",
                                         f"/api/v1/agents/{reg['agent_id']}/command", body)
        assert (status, record["state"]) == (200, "complete")  # still working
        assert any("reply for an unknown command" in line and "never-sent" in line
                   for line in controlplane.lines)
    finally:
        await agent.close()


async def test_a_waiter_keeps_its_command_when_the_id_is_resent(
        controlplane: ControlPlane, reg: dict[str, Any]) -> None:
    agent = MiniAgent(reg)  # answers only when the test says
    try:
        await agent.connect()
        url = f"/api/v1/agents/{reg['agent_id']}/command"
        body = {"action": "wake_session", "payload": {"sessionId": "w"}, "id": "resent"}
        first = asyncio.create_task(http_json(controlplane, "POST", url, {**body, "wait": 20}))
        await agent.wait_message(lambda m: m["type"] == "command")
        second = await http_json(controlplane, "POST", url, {**body, "wait": 0})
        assert second[0] == 202 and second[1]["sends"] == 2
        agent.send({"type": "complete", "id": "resent", "result": {"ok": True}})
        status, record = await asyncio.wait_for(first, 10)
        assert (status, record["state"], record["result"]) == (200, "complete", {"ok": True})
    finally:
        await agent.close()


async def test_a_command_to_a_closing_tunnel_is_not_connected_not_a_500(
        controlplane: ControlPlane, reg: dict[str, Any]) -> None:
    agent = MiniAgent(reg)
    try:
        await agent.connect()
        assert agent.ws is not None
        # the agent stops reading (the close handshake will hang for the control plane's
        # close timeout) and sends a broken frame: the control plane tears the session down
        agent.ws.transport.pause_reading()
        await agent.ws.send(b"\x00")
        url = f"/api/v1/agents/{reg['agent_id']}/command"
        body = {"action": "wake_session", "payload": {}, "wait": 0}
        statuses: list[int] = []
        async with asyncio.timeout(15):
            while not statuses or statuses[-1] == 202:
                statuses.append((await http_json(controlplane, "POST", url, body))[0])
        assert set(statuses) <= {202, 409}, statuses
    finally:
        if agent.ws is not None:
            agent.ws.transport.abort()
        await agent.close()
