"""Helpers for the mux tests: a wired pair of sans-I/O connections, frame builders."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable
from typing import Any

from agentkit.mux.connection import MuxConnection
from agentkit.mux.frames import FrameType, decode_frame
from agentkit.mux.settings import MuxSettings, Role


def raw(ftype: int, sid: int, payload: bytes = b"", flags: int = 0, reserved: int = 0) -> bytes:
    return struct.pack(">BBHI", ftype, flags, reserved, sid) + payload


def jraw(ftype: int, sid: int, body: Any) -> bytes:
    return raw(ftype, sid, json.dumps(body).encode())


def window(sid: int, inc: int) -> bytes:
    return raw(FrameType.WINDOW, sid, struct.pack(">I", inc))


def drain_out(conn: MuxConnection) -> list[bytes | str]:
    out: list[bytes | str] = []
    while (msg := conn.next_frame()) is not None:
        out.append(msg)
    return out


def decoded(messages: list[bytes | str]) -> list[tuple[FrameType, int, Any]]:
    """(type, stream id, body or payload) for every binary message."""
    out: list[tuple[FrameType, int, Any]] = []
    for m in messages:
        assert isinstance(m, bytes)
        f = decode_frame(m, 1 << 24)
        out.append((f.type, f.stream_id, f.body if f.body is not None else bytes(f.payload)))
    return out


def rsts(messages: list[bytes | str]) -> dict[int, str]:
    return {sid: body["reason"] for t, sid, body in decoded(messages) if t is FrameType.RST}


class Pair:
    """A control-plane connection and an agent connection, wired by hand."""

    def __init__(self, settings: MuxSettings | None = None) -> None:
        self.cp = MuxConnection(Role.CONTROL_PLANE, settings)
        self.agent = MuxConnection(Role.AGENT, settings)

    def pump(self) -> int:
        """Deliver frames both ways until both are idle; returns messages moved."""
        moved = 0
        while True:
            progressed = False
            for src, dst in ((self.cp, self.agent), (self.agent, self.cp)):
                while (msg := src.next_frame()) is not None:
                    assert isinstance(msg, bytes)
                    dst.receive(msg)
                    moved += 1
                    progressed = True
            if not progressed:
                return moved


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true (no fixed sleeps in the tests)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - the conditions are plain attributes
            await asyncio.sleep(0.005)
