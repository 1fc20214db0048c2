"""Stream id rules of one connection: the control plane opens odd ids, the agent even ids,
each side's ids only grow and are never reused. Kept apart from the connection so the
rule that tells a late frame (an id used before) from a stranger (never used) is one place.
"""

from __future__ import annotations

from .errors import MuxDraining
from .frames import MAX_STREAM_ID
from .settings import Role

__all__ = ["StreamIds"]


class StreamIds:
    """Our next id, and the highest id the peer opened."""

    __slots__ = ("_next", "_peer_high", "_peer_parity")

    def __init__(self, role: Role) -> None:
        self._next = role.first_id
        self._peer_parity = 0 if role is Role.CONTROL_PLANE else 1
        self._peer_high = 0

    def allocate(self) -> int:
        """The id of the next stream we open; :class:`~.errors.MuxDraining` once spent."""
        sid = self._next
        if sid > MAX_STREAM_ID:
            raise MuxDraining("stream ids exhausted on this connection")
        self._next = sid + 2
        return sid

    def check_peer_open(self, sid: int) -> str:
        """Why the peer may not open ``sid`` ("" if it may; it is then recorded as used)."""
        if sid % 2 != self._peer_parity:
            return f"OPEN with id {sid} of the wrong parity"
        if sid <= self._peer_high:
            return f"OPEN reuses stream id {sid}"
        self._peer_high = sid
        return ""

    def is_past(self, sid: int) -> bool:
        """Was ``sid`` in use on this connection before (so frames for it are late)?"""
        if sid % 2 == self._peer_parity:
            return sid <= self._peer_high
        return sid < self._next
