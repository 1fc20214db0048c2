"""A control plane that keeps sending commands but never reads cannot grow the agent's
queue: every message the command runner sends goes through the bounded reply path, and an
outcome dropped there is repeated when the id is sent again."""

from __future__ import annotations

from typing import Any

from pipeops_tunnel.commands import CommandRunner


class BoundedPeer:
    """Stands in for a multiplexer whose peer stopped reading: ``reply`` drops past the
    bound (as ``Multiplexer.reply_control`` does), ``send`` would queue without one."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.queued: list[dict[str, Any]] = []
        self.unbounded: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.unbounded.append(message)

    def reply(self, message: dict[str, Any]) -> bool:
        if len(self.queued) >= self.bound:
            return False
        self.queued.append(message)
        return True


async def no_sessions() -> None:
    return None


async def test_outcomes_of_a_command_flood_stay_within_the_reply_bound() -> None:
    runner = CommandRunner(no_sessions)
    peer = BoundedPeer(bound=50)
    runner.attach(peer.send, peer.reply)
    for n in range(2000):  # each fails at once: its outcome is produced in handle()
        runner.handle({"type": "command", "id": f"c{n}", "action": "start_session",
                       "payload": {"sessionId": "BAD_ID", "template": "x"}})
    assert peer.unbounded == []
    assert len(peer.queued) == 50

    peer.queued.clear()  # the control plane reads again and resends one it missed
    runner.handle({"type": "command", "id": "c1999", "action": "start_session",
                   "payload": {"sessionId": "BAD_ID", "template": "x"}})
    assert [(m["type"], m["id"]) for m in peer.queued] == [("ack", "c1999"),
                                                          ("failed", "c1999")]
    assert "sessionId" in peer.queued[1]["error"]
