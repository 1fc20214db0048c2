"""The cluster's verbs: create/get/list/update/patch/delete/scale with the real rules.

This is the layer between HTTP (app.py) and storage (store.py): it checks that the
namespace exists, that names are free (409 AlreadyExists), that a resourceVersion
precondition still holds (409 Conflict), runs admission (objects.py), applies patches
(patch.py), cascades namespace deletion, and keeps pod logs in step with pods. The seed
loader and the admin API use it too, so every write follows one path.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from kubesim import errors, objects
from kubesim.auth import Authenticator
from kubesim.logs import PodLogs
from kubesim.patch import apply_patch, apply_removals
from kubesim.resources import Registry, ResourceType
from kubesim.selectors import Predicate
from kubesim.stats import TrafficStats
from kubesim.store import Obj, Store, TooOld

NS_TYPE_KEY = ("", "namespaces")


@dataclass
class Faults:
    """Injected misbehaviour (admin API): a delay before every API answer, 503s until."""

    delay: float = 0.0
    unavailable_until: float = 0.0


@dataclass
class Cluster:
    registry: Registry
    store: Store
    auth: Authenticator
    logs: PodLogs = field(default_factory=PodLogs)
    stats: TrafficStats = field(default_factory=TrafficStats)
    faults: Faults = field(default_factory=Faults)
    bookmark_interval: float = 10.0
    # How long a deleted namespace stays Terminating before its contents go.
    namespace_finalize_delay: float = 0.5
    _services_created: int = 0
    # What each field manager last applied (server-side apply), so that the next apply
    # removes what it no longer sets: (storage key, namespace, name, manager) -> body.
    _applied: dict[tuple[Any, ...], Obj] = field(default_factory=dict)

    # ---- helpers ----------------------------------------------------------------------

    def _require_namespace(self, rt: ResourceType, namespace: str | None) -> None:
        if not (rt.namespaced and namespace):
            return
        ns = self.store.get(NS_TYPE_KEY, "", namespace)
        if ns is None:
            raise errors.namespace_not_found(namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise errors.ApiError(
                403, "Forbidden", f"{rt.plural} is forbidden: unable to create new "
                f"content in namespace {namespace} because it is being terminated",
                {"kind": rt.plural})

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self.store.get(rt.storage_key, namespace or "" if rt.namespaced else "", name)
        if obj is None:
            raise errors.not_found(rt, name)
        return obj

    def exists(self, rt: ResourceType, namespace: str | None, name: str) -> bool:
        return self.store.get(rt.storage_key, namespace or "" if rt.namespaced else "",
                              name) is not None

    # ---- writes -----------------------------------------------------------------------

    def create(self, rt: ResourceType, namespace: str | None, body: Any,
               dry_run: bool = False) -> Obj:
        if rt.kind == "Service" and not rt.group:
            self._services_created += 1
        obj = objects.prepare_create(rt, body, namespace if rt.namespaced else None,
                                     self._services_created)
        ns = obj["metadata"].get("namespace", "")
        self._require_namespace(rt, ns)
        if self.store.get(rt.storage_key, ns, obj["metadata"]["name"]) is not None:
            raise errors.already_exists(rt, obj["metadata"]["name"])
        stored = self.store.put(rt.storage_key, obj, dry_run=dry_run)
        if rt.kind == "Pod" and not rt.group and not dry_run:
            self._seed_logs(stored)
        return stored

    def _seed_logs(self, pod: Obj) -> None:
        meta = pod["metadata"]
        containers = [c.get("name", "") for c in pod.get("spec", {}).get("containers") or []]
        for key, value in (meta.get("annotations") or {}).items():
            if key == objects.LOG_ANNOTATION and containers:
                container = containers[0]
            elif key.startswith(objects.LOG_ANNOTATION + "."):
                container = key[len(objects.LOG_ANNOTATION) + 1:]
            else:
                continue
            self.logs.append((meta["namespace"], meta["name"], container),
                             str(value).splitlines())

    def update(self, rt: ResourceType, namespace: str | None, name: str, body: Any,
               subresource: str | None = None, dry_run: bool = False) -> Obj:
        old = self.get(rt, namespace, name)
        if isinstance(body, dict):
            want_rv = (body.get("metadata") or {}).get("resourceVersion")
            if want_rv and want_rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(rt, name)
        new = objects.prepare_update(rt, old, body, name, status_only=subresource == "status")
        return self.store.put(rt.storage_key, new, dry_run=dry_run)

    def patch(self, rt: ResourceType, namespace: str | None, name: str, kind: str,
              body: Any, subresource: str | None = None, dry_run: bool = False,
              field_manager: str | None = None) -> Obj:
        applied: tuple[tuple[Any, ...], Obj] | None = None  # (key, body) to remember
        if kind == "apply":
            if not field_manager:
                raise errors.ApiError(
                    422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: '
                    "Required value: is required for apply patch",
                    {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [
                        {"reason": "FieldValueRequired", "field": "fieldManager",
                         "message": "Required value: is required for apply patch"}]})
            if not isinstance(body, dict):
                raise errors.bad_request("apply patch must be an object")
            objects.check_type(rt, body)
            if body.get("metadata", {}).get("name", name) != name:
                raise errors.bad_request("the name of the object does not match the name on "
                                         "the URL")
            key = (rt.storage_key, namespace or "", name, field_manager)
            if not self.exists(rt, namespace, name):
                body = {**body, "metadata": {**body.get("metadata", {}), "name": name}}
                created = self.create(rt, namespace, body, dry_run=dry_run)
                if not dry_run:
                    self._applied[key] = body
                return created
            applied = (key, body)
            previous = self._applied.get(key)
            if previous is not None:
                body = apply_removals(previous, body)
            kind = "strategic"
        old = self.get(rt, namespace, name)
        new = apply_patch(kind, old, body)
        if not isinstance(new, dict):
            raise errors.bad_request("the patch did not produce an object")
        updated = self.update(rt, namespace, name, new, subresource, dry_run=dry_run)
        if applied is not None and not dry_run:
            self._applied[applied[0]] = applied[1]
        return updated

    def delete(self, rt: ResourceType, namespace: str | None, name: str,
               options: dict[str, Any] | None = None, dry_run: bool = False) -> Obj:
        old = self.get(rt, namespace, name)
        pre = (options or {}).get("preconditions") or {}
        if (pre.get("uid") and pre["uid"] != old["metadata"]["uid"]) or (
            pre.get("resourceVersion")
            and pre["resourceVersion"] != old["metadata"]["resourceVersion"]
        ):
            raise errors.conflict(rt, name)
        ns = old["metadata"].get("namespace", "")
        if rt.storage_key == NS_TYPE_KEY and not dry_run:
            return self._terminate_namespace(old)
        gone = self.store.delete(rt.storage_key, ns, name, dry_run=dry_run)
        if not dry_run:
            for key in [k for k in self._applied if k[:3] == (rt.storage_key, ns, name)]:
                del self._applied[key]
        if rt.kind == "Pod" and not rt.group and not dry_run:
            self.logs.forget_pod(ns, name)
        return gone

    def _terminate_namespace(self, ns: Obj) -> Obj:
        """Like the real namespace controller: Terminating now, contents and itself later."""
        name = ns["metadata"]["name"]
        if ns["metadata"].get("deletionTimestamp"):
            return ns
        meta = {**ns["metadata"], "deletionTimestamp": objects.now_rfc3339()}
        terminating = self.store.put(NS_TYPE_KEY, {**ns, "metadata": meta,
                                                   "status": {"phase": "Terminating"}})
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._finalize_namespace(name)
        else:
            loop.call_later(self.namespace_finalize_delay, self._finalize_namespace, name)
        return terminating

    def _finalize_namespace(self, namespace: str) -> None:
        for rt in {t.storage_key: t for t in self.registry.all_types() if t.namespaced}.values():
            for obj in list(self.store.iterate(rt.storage_key, namespace)):
                self.delete(rt, namespace, obj["metadata"]["name"])
        if self.store.get(NS_TYPE_KEY, "", namespace) is not None:
            self.store.delete(NS_TYPE_KEY, "", namespace)

    # ---- scale subresource --------------------------------------------------------------

    def get_scale(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self.get(rt, namespace, name)
        meta = obj["metadata"]
        labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        replicas = (obj.get("spec") or {}).get("replicas", 1)
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                              "creationTimestamp") if k in meta},
            "spec": {"replicas": replicas},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": ",".join(f"{k}={v}" for k, v in labels.items())},
        }

    def set_scale(self, rt: ResourceType, namespace: str | None, name: str, scale: Any,
                  dry_run: bool = False) -> Obj:
        if not isinstance(scale, dict) or scale.get("kind", "Scale") != "Scale":
            raise errors.bad_request("the object provided is unrecognized (must be of type "
                                     "Scale)")
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise errors.ApiError(422, "Invalid", f'Scale.autoscaling "{name}" is invalid: '
                                  "spec.replicas: Invalid value: must be a non-negative integer")
        obj = self.get(rt, namespace, name)
        want_rv = (scale.get("metadata") or {}).get("resourceVersion")
        if want_rv and want_rv != obj["metadata"]["resourceVersion"]:
            raise errors.conflict(rt, name)
        new = {**obj, "spec": {**(obj.get("spec") or {}), "replicas": replicas}}
        new["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
        self.update(rt, namespace, name, new, dry_run=dry_run)
        return self.get_scale(rt, namespace, name) if not dry_run else scale

    # ---- lists --------------------------------------------------------------------------

    def list(self, rt: ResourceType, namespace: str | None, predicate: Predicate | None,
             limit: int | None, cont: str | None, resource_version: str | None,
             rv_match: str | None) -> tuple[list[Obj], dict[str, Any]]:
        after = None
        if cont:
            token_rv, after = decode_continue(cont)
            try:
                self.store.check_not_too_old(token_rv)
            except TooOld as e:
                raise errors.gone(
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter."
                ) from e
        elif resource_version not in (None, "", "0") and (rv_match == "Exact" or (
                limit and rv_match is None)):
            try:
                self.store.check_not_too_old(int(resource_version))
            except ValueError as e:
                raise errors.bad_request(f"invalid resource version: {resource_version}") from e
            except TooOld as e:
                raise errors.gone("The resourceVersion for the provided list is too old.") \
                    from e
        items, last, remaining = self.store.page(rt.storage_key, namespace, predicate, after,
                                                 limit)
        meta: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        if last is not None:
            meta["continue"] = encode_continue(self.store.rv, last)
            if remaining is not None:
                meta["remainingItemCount"] = remaining
        return items, meta


def encode_continue(rv: int, last: tuple[str, str]) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": list(last)},
                     separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        ns, name = raw["start"]
        return int(raw["rv"]), (str(ns), str(name))
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise errors.bad_request(f"invalid continue token: continue key is not valid: {e}"
                                 ) from e
