"""PATCH bodies: JSON patch (RFC 6902), merge patch (RFC 7386) and strategic merge.

Strategic merge covers what `kubectl apply`, `kubectl scale`, `kubectl label` and
server-side apply send for built-in kinds: lists merged by their merge key
(containers by name, ports by containerPort/port, ...), `$patch: replace|delete`,
`$retainKeys`, `$deleteFromPrimitiveList/...` and `$setElementOrder/...` directives.
Pure functions, no I/O.
"""

from __future__ import annotations

import copy
from typing import Any

from kubesim.errors import ApiError, bad_request

JSON = Any

# field name -> merge key for lists of maps (strategic merge patch).
_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "conditions": "type",
    "ownerReferences": "uid",
}
# Lists of scalars that strategic merge unions rather than replaces.
_MERGED_SCALAR_LISTS = {"finalizers"}


def _merge_key(field: str, items: list[JSON]) -> str | None:
    if field == "ports":
        for item in items:
            if isinstance(item, dict):
                if "containerPort" in item:
                    return "containerPort"
                if "port" in item:
                    return "port"
        return None
    return _MERGE_KEYS.get(field)


def merge_patch(target: JSON, patch: JSON) -> JSON:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge(target: JSON, patch: JSON) -> JSON:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = value
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(field: str, current: JSON, patch: list[JSON]) -> list[JSON]:
    if not isinstance(current, list):
        current = []
    if field in _MERGED_SCALAR_LISTS and all(not isinstance(v, dict) for v in patch):
        merged: list[JSON] = current + [v for v in patch if v not in current]
        return merged
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [copy.deepcopy(v) for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    key = _merge_key(field, patch + current)
    if key is None:
        return [copy.deepcopy(v) for v in patch]
    result = list(current)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            return [copy.deepcopy(v) for v in patch]
        idx = next(
            (i for i, c in enumerate(result) if isinstance(c, dict) and c.get(key) == item[key]),
            None,
        )
        if item.get("$patch") == "delete":
            if idx is not None:
                del result[idx]
        elif idx is None:
            result.append(strategic_merge({}, item))
        else:
            result[idx] = strategic_merge(result[idx], item)
    return result


def apply_removals(previous: JSON, current: JSON, field: str = "") -> JSON:
    """`current` as a strategic merge patch that also removes what the same field manager
    applied last time and no longer applies (server-side apply's field ownership, for one
    manager: enough for `helm upgrade` and `kubectl apply --server-side`)."""
    if isinstance(previous, dict) and isinstance(current, dict):
        out = {k: apply_removals(previous.get(k), v, k) for k, v in current.items()}
        out.update({k: None for k in previous if k not in current})
        return out
    if isinstance(previous, list) and isinstance(current, list):
        key = _merge_key(field, current + previous)
        if key is None or not all(isinstance(v, dict) and key in v
                                  for v in current + previous):
            return current
        before = {v[key]: v for v in previous}
        kept = [apply_removals(before.get(v[key]), v, "") for v in current]
        present = {v[key] for v in current}
        return kept + [{"$patch": "delete", key: k} for k in before if k not in present]
    return current


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer: {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: JSON, parts: list[str]) -> JSON:
    cur = doc
    for p in parts[:-1]:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            raise ApiError(422, "Invalid", f"the server rejected our request due to an error "
                           f"in our request: doc is missing path: /{'/'.join(parts)}")
    return cur


def _get(doc: JSON, path: str) -> JSON:
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise ApiError(422, "Invalid", f"doc is missing path: {path}")


def _remove(doc: JSON, path: str) -> JSON:
    parts = _pointer(path)
    parent = _parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise ApiError(422, "Invalid", f"doc is missing path: {path}")


def _add(doc: JSON, path: str, value: JSON, replace: bool = False) -> JSON:
    parts = _pointer(path)
    if not parts:
        return value
    parent = _parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise ApiError(422, "Invalid", f"doc is missing key: {path}")
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-" and not replace:
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent) - (1 if replace else 0):
            if replace:
                parent[int(last)] = value
            else:
                parent.insert(int(last), value)
        else:
            raise ApiError(422, "Invalid", f"index out of range: {path}")
    else:
        raise ApiError(422, "Invalid", f"doc is missing path: {path}")
    return doc


def json_patch(target: JSON, ops: JSON) -> JSON:
    """RFC 6902."""
    if not isinstance(ops, list):
        raise bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"invalid json patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "replace":
            doc = _add(doc, path, copy.deepcopy(op.get("value")), replace=True)
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "move":
            doc = _add(doc, path, _remove(doc, op["from"]))
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                # the real server's words: the failed path is not named
                raise ApiError(422, "Invalid", "the server rejected our request due to an "
                               "error in our request")
        else:
            raise bad_request(f"unexpected json patch operation: {kind!r}")
    return doc


PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}


def apply_patch(kind: str, target: JSON, patch: JSON) -> JSON:
    if kind == "json":
        return json_patch(target, patch)
    if kind == "merge":
        return merge_patch(target, patch)
    return strategic_merge(target, patch)
