"""A minimal OpenAPI v3 description, just enough for `kubectl apply` to validate.

kubectl (1.27+) asks `/openapi/v3/<group-version>` whether each kind's PATCH operation
accepts the `fieldValidation` query parameter; if it does, kubectl leaves validation to
the server instead of downloading full schemas. The PATCH request bodies deliberately
omit `application/strategic-merge-patch+json`, so kubectl computes strategic merge
patches from its compiled-in types (and JSON merge patches for other kinds) rather than
from schemas we do not publish. `/openapi/v2` is a 404, as on servers without it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kubesim.resources import Registry, ResourceType

_PARAMS = [
    {"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    for n in ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")
]


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _op(rt: ResourceType, action: str, verb: str, patch: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{verb}{rt.kind}",
        "parameters": _PARAMS,
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {
            "group": rt.group, "version": rt.version, "kind": rt.kind
        },
    }
    if patch:
        op["requestBody"] = {"content": {
            "application/json-patch+json": {"schema": {"type": "object"}},
            "application/merge-patch+json": {"schema": {"type": "object"}},
            "application/apply-patch+yaml": {"schema": {"type": "object"}},
        }}
    return op


def group_version_doc(reg: Registry, group: str, version: str) -> dict[str, Any] | None:
    if not reg.served(group, version):
        return None
    paths: dict[str, Any] = {}
    prefix = "/" + _gv_path(group, version)
    for rt in reg.in_version(group, version):
        base = f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced \
            else f"{prefix}/{rt.plural}"
        paths[base] = {"get": _op(rt, "list", "list"), "post": _op(rt, "post", "create")}
        paths[base + "/{name}"] = {
            "get": _op(rt, "get", "read"),
            "put": _op(rt, "put", "replace"),
            "patch": _op(rt, "patch", "patch", patch=True),
            "delete": _op(rt, "delete", "delete"),
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }


def root_doc(reg: Registry) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for group, versions in reg.versions.items():
        for version in versions:
            doc = group_version_doc(reg, group, version)
            digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()
            gv = _gv_path(group, version)
            paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest.upper()}"}
    return {"paths": paths}
