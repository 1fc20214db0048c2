"""Parsing what a peer sent, in one place: any failure is a reasoned refusal.

Everything the control plane (or any peer) sends us is hostile until parsed: tunnel text
messages, OPEN payloads, command payloads, control-plane replies. ``json.loads`` alone
fails in more ways than ``ValueError``: a deeply nested document raises
``RecursionError``, and a document it accepts can still be nested deeply enough to make
the next recursive step (pydantic, a redaction walk, ``json.dumps``) overflow. So every
peer-supplied document goes through :func:`parse_json`, which turns *every* parse
failure into :class:`PeerInputError` (a ``ValueError``, so existing refusal paths catch
it) with a short reason, and refuses a document nested deeper than ``MAX_DEPTH``.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_DEPTH", "PeerInputError", "depth_of", "parse_json", "parse_object"]

MAX_DEPTH = 64  # no message of the protocol nests deeper than a handful of levels


class PeerInputError(ValueError):
    """A peer's input could not be used; ``str(err)`` is the reason to answer with."""


def depth_of(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deeply ``value`` nests containers (0 for a scalar), counted without recursion
    and stopping early once past ``limit`` (then ``limit + 1`` is returned)."""
    deepest = 0
    todo: list[tuple[Any, int]] = [(value, 0)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > limit:
            return limit + 1
        deepest = max(deepest, depth)
        todo.extend((child, depth) for child in children)
    return deepest


def parse_json(data: bytes | bytearray | memoryview | str, *, what: str = "message",
               max_depth: int = MAX_DEPTH) -> Any:
    """The JSON document ``data`` holds; :class:`PeerInputError` naming ``what`` for any
    failure (not UTF-8, not JSON, a number too long, nested deeper than ``max_depth``)."""
    try:
        text = bytes(data).decode() if not isinstance(data, str) else data
        document = json.loads(text)
    except RecursionError:
        raise PeerInputError(f"{what} is nested too deeply") from None
    except (ValueError, TypeError) as exc:  # UnicodeDecodeError, JSONDecodeError, big ints
        reason = str(exc).split("\n", 1)[0][:120]
        raise PeerInputError(f"{what} is not JSON ({reason})") from None
    if depth_of(document, max_depth) > max_depth:
        raise PeerInputError(f"{what} is nested too deeply (more than {max_depth} levels)")
    return document


def parse_object(data: bytes | bytearray | memoryview | str, *, what: str = "message",
                 max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Like :func:`parse_json`, and the document must be a JSON object."""
    document = parse_json(data, what=what, max_depth=max_depth)
    if not isinstance(document, dict):
        raise PeerInputError(f"{what} is not a JSON object")
    return document
