"""Parsing what a peer sent, in one place: any failure is a reasoned refusal.

Everything the control plane (or any peer) sends us is hostile until parsed: tunnel text
messages, OPEN payloads, command payloads, control-plane replies. ``json.loads`` alone
fails in more ways than ``ValueError``: a deeply nested document raises
``RecursionError``, and a document it accepts can still be nested deeply enough to make
the next recursive step (a typed conversion, a redaction walk, ``json.dumps``) overflow.
So every peer-supplied document goes through :func:`parse_json`, which turns *every* parse
failure into :class:`PeerInputError` (a ``ValueError``, so existing refusal paths catch
it) with a short reason, and refuses a document nested deeper than ``MAX_DEPTH``.

A parsed document becomes a typed record with :func:`convert` (msgspec: a fraction of
pydantic's memory, issue 15): its failures are a :class:`PeerInputError` too, worded
``field <path>: <what was wrong>`` or ``required field <path> is missing``. Rules a type
cannot say (a UUID to normalise, a Kubernetes quantity) are a :class:`Checked` record's
``checks``, applied when it is made and reported under the field's wire name.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import msgspec

__all__ = ["MAX_DEPTH", "Checked", "PeerInputError", "convert", "depth_of", "parse_json",
           "parse_object"]

T = TypeVar("T")

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


# --- typed records --------------------------------------------------------------------


class Checked(msgspec.Struct):
    """A record whose fields may carry rules beyond their type: ``checks`` maps a field's
    attribute name to a function that returns the value to keep (normalised, or as it
    was) or raises ``ValueError`` with the reason. A field that is None is not checked
    (an optional field left out). ``null_is_default`` names top-level keys for which a
    JSON ``null`` means "use the default" (:func:`convert` drops them)."""

    checks: ClassVar[Mapping[str, Callable[[Any], Any]]] = {}
    null_is_default: ClassVar[frozenset[str]] = frozenset()

    def __post_init__(self) -> None:
        for name, check in self.checks.items():
            value = getattr(self, name)
            if value is None:
                continue
            try:
                setattr(self, name, check(value))
            except ValueError as exc:  # msgspec adds where the record sits, if nested
                raise ValueError(f"field {_wire_name(type(self), name)}: {exc}") from None


def _wire_name(kind: type[msgspec.Struct], name: str) -> str:
    return next((f.encode_name for f in msgspec.structs.fields(kind) if f.name == name), name)


def convert(document: Any, kind: type[T], *, strict: bool, what: str = "payload") -> T:
    """``document`` (parsed JSON) as ``kind``; unknown keys are ignored unless ``kind``
    forbids them. ``strict``: no coercion (``"5"`` is not an int, ``1`` not a bool);
    otherwise msgspec's lax mode (numeric strings, ``"true"``/``1`` for a bool). Every
    failure is a :class:`PeerInputError` saying which field and what was wrong."""
    if isinstance(kind, type) and issubclass(kind, Checked) and isinstance(document, dict):
        if kind.null_is_default:
            document = {k: v for k, v in document.items()
                        if not (v is None and k in kind.null_is_default)}
    try:
        return msgspec.convert(document, kind, strict=strict)
    except msgspec.ValidationError as exc:
        raise PeerInputError(problem(exc, kind)) from None
    except RecursionError:
        raise PeerInputError(f"{what} is nested too deeply") from None
    except Exception as exc:  # whatever else a hostile document provokes: still a refusal
        raise PeerInputError(f"{what} not usable ({type(exc).__name__})") from None


_AT = re.compile(r"(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?", re.DOTALL)
_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]*)`")
_CHECKED = re.compile(r"field (?P<name>\S+): (?P<reason>.*)", re.DOTALL)
_ENUM = re.compile(r"Invalid enum value .*", re.DOTALL)


def problem(exc: msgspec.ValidationError, kind: Any = None) -> str:
    """msgspec's message in our words: ``field routes[0].tls: expected bool, got str``,
    ``required field cluster_id is missing``, ``field status: expected one of pending,
    ready`` (a top-level field of ``kind``); never the offending value itself (a reply
    may echo a secret into any field)."""
    parts = _AT.fullmatch(str(exc))
    message, path = (parts["message"], parts["path"] or "") if parts else (str(exc), "")
    path = path.removeprefix(".")
    if missing := _MISSING.fullmatch(message):
        return f"required field {_join(path, missing['name'])} is missing"
    if checked := _CHECKED.fullmatch(message):
        return f"field {_join(path, checked['name'])}: {checked['reason']}"
    if _ENUM.fullmatch(message):
        allowed = _literal_values(kind, path)
        message = (f"expected one of {', '.join(map(str, allowed))}" if allowed
                   else "not one of the values it accepts")
    message = message.replace("`", "")
    message = message[:1].lower() + message[1:]
    return f"field {path}: {message}" if path else message


def _literal_values(kind: Any, path: str) -> tuple[Any, ...]:
    """The values a top-level ``Literal`` field of the record ``kind`` accepts (else ())."""
    if not (isinstance(kind, type) and issubclass(kind, msgspec.Struct)):
        return ()
    field = next((f for f in msgspec.structs.fields(kind) if f.encode_name == path), None)
    if field is None or typing.get_origin(field.type) is not typing.Literal:
        return ()
    return typing.get_args(field.type)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
