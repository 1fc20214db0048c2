"""Label and field selectors: parse the query-string syntax once, match objects many times.

Label selectors support `=`, `==`, `!=`, `in`, `notin`, `key` (exists) and `!key`.
Field selectors support `=`, `==`, `!=` on any dotted path (`metadata.name`,
`metadata.namespace`, `spec.nodeName`, `status.phase`, ...), a superset of the fields
the real server indexes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubesim.errors import bad_request

Obj = dict[str, Any]
Predicate = Callable[[Obj], bool]

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_RE = re.compile(rf"^\s*({_KEY})\s*(==|!=|=)\s*([-A-Za-z0-9_.]*)\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str]

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        # "!=" and "notin" match objects without the label too, as the real server does.
        return not present or value not in self.values


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> list[Requirement]:
    if not text:
        return []
    reqs: list[Requirement] = []
    for part in _split_top(text):
        if m := _SET_RE.match(part):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(Requirement(m.group(1), m.group(2), values))
        elif m := _EQ_RE.match(part):
            op = "=" if m.group(2) in ("=", "==") else "!="
            reqs.append(Requirement(m.group(1), op, frozenset([m.group(3)])))
        elif m := _EXISTS_RE.match(part):
            reqs.append(Requirement(m.group(2), "!" if m.group(1) else "exists", frozenset()))
        else:
            raise bad_request(f"unable to parse requirement: {part.strip()!r}")
    return reqs


def parse_field_selector(text: str | None) -> list[tuple[str, bool, str]]:
    """Returns (path, want_equal, value) triples."""
    if not text:
        return []
    out: list[tuple[str, bool, str]] = []
    for part in text.split(","):
        if not part.strip():
            continue
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*?)\s*$", part)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        out.append((m.group(1), m.group(2) != "!=", m.group(3)))
    return out


# The fields the real server selects on, per kind (metadata.name and metadata.namespace
# everywhere); any other is a 400, in the real server's words.
_FIELDS: dict[tuple[str, str], set[str]] = {
    ("", "Pod"): {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                  "spec.serviceAccountName", "spec.hostNetwork", "status.phase",
                  "status.podIP", "status.podIPs", "status.nominatedNodeName"},
    ("", "Event"): {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                    "involvedObject.uid", "involvedObject.apiVersion",
                    "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
                    "reportingComponent", "source", "type"},
    ("", "Secret"): {"type"},
    ("", "Node"): {"spec.unschedulable"},
    ("", "Namespace"): {"status.phase"},
    ("", "Service"): {"spec.clusterIP", "spec.type"},
    ("apps", "ReplicaSet"): {"status.replicas"},
    ("batch", "Job"): {"status.successful"},
}


def known_fields(rt: Any, text: str | None) -> str | None:
    """`text`, after a 400 for a field the real server does not select on for `rt`."""
    extra = _FIELDS.get((rt.group, rt.kind), set())
    for path, _, _ in parse_field_selector(text):
        if path in ("metadata.name", "metadata.namespace") or path in extra:
            continue
        if extra:
            raise bad_request(f"field label not supported: {path}")
        raise bad_request(f'"{path}" is not a known field selector: only "metadata.name", '
                          '"metadata.namespace"')
    return text


def _field(obj: Obj, path: str) -> str:
    cur: Any = obj
    for seg in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(seg)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def build_predicate(label_selector: str | None, field_selector: str | None) -> Predicate | None:
    """None means "everything matches", which lets list pagination stay O(page)."""
    labels = parse_label_selector(label_selector)
    fields = parse_field_selector(field_selector)
    if not labels and not fields:
        return None

    def predicate(obj: Obj) -> bool:
        obj_labels = obj.get("metadata", {}).get("labels") or {}
        if not all(r.matches(obj_labels) for r in labels):
            return False
        return all((_field(obj, p) == v) == eq for p, eq, v in fields)

    return predicate


def field_equals(field_selector: str | None, path: str) -> str | None:
    """The value of a `path=value` requirement, used to narrow lookups (metadata.name)."""
    for p, eq, v in parse_field_selector(field_selector):
        if p == path and eq:
            return v
    return None
