"""What the multiplexer needs of a message transport: one WebSocket message per frame or
control message. websockets' asyncio connections fit as they are; :mod:`.memory` has an
in-process pair for tests."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Transport", "close_reason"]


class Transport(Protocol):
    async def send(self, message: bytes | str, /) -> None: ...

    async def recv(self) -> bytes | str: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


def close_reason(text: str, size: int = 120) -> str:
    """At most ``size`` UTF-8 bytes (a WebSocket close reason is limited to 123)."""
    return text.encode()[:size].decode(errors="ignore")
