"""The loader's one line for a value msgspec refused, and the schema walks it needs.

``msgspec.convert`` says what is wrong in its own words and at a JSON path
(``Expected `int` <= 65535 - at `$.agent.port` ``); the line names the dotted key, the
value (a secret as '***'), where it came from and what was expected, in lower-case words
(``config error: agent.port = '99999' (from flag --port): expected an integer <= 65535``).
A section's own check (``schema._Section.check``) starts its message with the field it is
about, or with a full dotted key, and is placed from that.
"""

from __future__ import annotations

import re
import reprlib
from typing import Any, Literal, get_args, get_origin

import msgspec

from agentkit.config.schema import Config, SecretStr


def schema_leaves(section: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> type (``Annotated`` removed) of every setting the schema has."""
    out: dict[str, Any] = {}
    for info in msgspec.structs.fields(section):
        kind = unannotated(info.type)
        if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
            out.update(schema_leaves(kind, f"{prefix}{info.name}."))
        else:
            out[f"{prefix}{info.name}"] = kind
    return out


def unannotated(kind: Any) -> Any:
    """``Annotated[T, ...]`` -> ``T``; any other type as it is."""
    while hasattr(kind, "__metadata__"):  # Annotated[...]
        kind = kind.__origin__
    return kind


_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 80
_SHOW.maxlevel = 3


def describe_value(value: Any, secret: bool) -> str:
    if secret:
        return "'***'"
    shown = _SHOW.repr(value)  # bounded however large or self-containing the value is
    return shown if len(shown) <= 80 else shown[:77] + "...'"


def source_of(key: str, sources: dict[str, str]) -> str:
    """Where the longest set prefix of ``key`` came from, else the first key set under it
    (a section named by the keys in it); "default" if none was set."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in sources:
            return sources[".".join(parts[:end])]
    return next((source for dotted, source in sources.items()
                 if dotted.startswith(key + ".")), "default")


_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[\.\.\.\]")
_WORDS = {"int": "an integer", "float": "a number", "str": "a string",
          "bool": "a boolean (true/false, yes/no, on/off, 1/0)", "array": "a list",
          "object": "a mapping", "null": "null", "bytes": "bytes"}
_GOT = {**_WORDS, "bool": "true/false"}


def _location(path: str) -> list[str | int]:
    """``$.tunnel.forwards[0].name`` -> ["tunnel", "forwards", 0, "name"]; a dict's value
    (``[...]``) ends the location."""
    loc: list[str | int] = []
    for match in _PATH_PART.finditer(path):
        if match.group(1):
            loc.append(match.group(1))
        elif match.group(2):
            loc.append(int(match.group(2)))
        else:
            loc.append("...")
    return loc


def _type_at(loc: list[str | int]) -> Any:
    """The schema's type (with its Annotated metadata) at ``loc``; None if unknown."""
    kind: Any = Config
    for part in loc:
        base = unannotated(kind)
        if isinstance(base, type) and issubclass(base, msgspec.Struct) \
                and isinstance(part, str):
            kind = next((f.type for f in msgspec.structs.fields(base) if f.name == part), None)
        elif get_origin(base) in (list, dict) and get_args(base):
            kind = get_args(base)[-1]
        else:
            return None
    return kind


def _default(loc: list[str | int]) -> Any:
    """The schema's default at ``loc`` (a field of a section); None if it has none."""
    section = unannotated(_type_at(loc[:-1]))
    for info in msgspec.structs.fields(section) if _fields(section) else ():
        if info.name == loc[-1]:
            if info.default is not msgspec.NODEFAULT:
                return info.default
            if info.default_factory is not msgspec.NODEFAULT:
                return info.default_factory()
    return None


def _fields(kind: Any) -> set[str]:
    base = unannotated(kind)
    if isinstance(base, type) and issubclass(base, msgspec.Struct):
        return {f.name for f in msgspec.structs.fields(base)}
    return set()


def _expected(text: str, kind: Any) -> str:
    """msgspec's wording of what it expected, as the error line says it."""
    base = unannotated(kind)
    if text.startswith("Invalid enum value") and get_origin(base) is Literal:
        return "expected one of " + ", ".join(map(repr, get_args(base)))
    match = re.fullmatch(r"Expected `([^`]+)`(.*?)(?:, got `([^`]+)`)?", text, re.DOTALL)
    if not match:
        return text[:1].lower() + text[1:]
    name, rest, got = match.groups()
    what = _WORDS.get(name, f"`{name}`")
    if name == "object" and _fields(kind):
        what = "a mapping of settings"
    unit = "characters" if name == "str" else "items"
    rest = re.sub(r"of length <= (\d+)", rf"of at most \1 {unit}", rest)
    rest = re.sub(r"of length >= (\d+)", rf"of at least \1 {unit}", rest)
    rest = re.sub(r"(\d)\.0\b", r"\1", rest).replace("matching regex", "matching")
    return f"expected {what}{rest}" + (f", not {_GOT.get(got, got)}" if got and
                                        got != "str" else "")


def explain(message: str, raw: dict[str, Any], sources: dict[str, str]) -> str:
    """The one line for msgspec's ``message`` about ``raw``."""
    text, sep, path = message.rpartition(" - at `")
    if not sep:
        text, path = message, "$`"
    each = ""
    if path.startswith("key` in `"):
        each, path = "each key: ", path.removeprefix("key` in `")
    loc = _location(path.removesuffix("`"))
    if "..." in loc:
        each, loc = "each value: ", loc[:loc.index("...")]
    dotted = ".".join(map(str, loc))
    kind = _type_at(loc)

    unknown = re.fullmatch(r"Object contains unknown field `(.*)`", text, re.DOTALL)
    if unknown:
        key = ".".join(map(str, [*loc, unknown.group(1)]))
        return f"config error: unknown key {key} (from {source_of(key, sources)})"
    missing = re.fullmatch(r"Object missing required field `(.*)`", text, re.DOTALL)
    if missing:
        key = ".".join(map(str, [*loc, missing.group(1)]))
        return f"config error: {key} is required (from {source_of(key, sources)})"
    expected = each + _expected(text, kind)
    named = re.match(r"([a-z_]+): ", text)
    if not each and named and named.group(1) in _fields(kind):
        # a section's own check about one of its fields ("backoff_max: must not be ...")
        loc = [*loc, named.group(1)]
        dotted, kind, expected = ".".join(map(str, loc)), _type_at(loc), text[named.end():]
    else:
        # a section's check naming the key it is about first, with the rest of the story
        about = re.match(r"[a-z_]+(\.[a-z_]+)+", text)
        if _fields(kind) and about and about.group(0).startswith(dotted + "."):
            return f"config error: {text} (from {source_of(about.group(0), sources)})"
    value: Any = raw
    for depth, part in enumerate(loc):
        if isinstance(value, dict):
            if part not in value and depth == len(loc) - 1:  # a default, checked with others
                value = _default(loc)
            else:
                value = value.get(str(part))
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            value = None
    shown = describe_value(value, unannotated(kind) is SecretStr)
    return f"config error: {dotted} = {shown} (from {source_of(dotted, sources)}): {expected}"
