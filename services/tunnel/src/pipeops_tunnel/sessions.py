"""Session commands against the Kubernetes API (PROTOCOL.md section 3, seeds/004).

A session is a Deployment, a Service and, with ``persistentHome``, a PersistentVolumeClaim
in ``kubernetes.session_namespace``, all named ``session-<sessionId>`` and labelled
``app=pipeops-session, session=<sessionId>``. Payloads are validated (msgspec records,
strict types: ``"true"`` is not a bool, ``"80"`` not a port) by :func:`decode` before any
object is created; a start that fails half-way deletes what it created.

Payloads (unknown keys are ignored, so a newer control plane can add fields):

* ``start_session {sessionId, template, user?, image?, persistentHome?, storage?, memory?,
  cpu?, port?}``: ``image`` defaults to ``template`` (the template names the session
  image); ``port`` (default 8080) is the container's and the Service's port.
* ``stop_session {sessionId, deletePVC?}``: deletes the Deployment and Service, the PVC
  only with ``deletePVC: true``.
* ``hibernate_session {sessionId}`` / ``wake_session {sessionId}``: scale to 0 / 1.
"""

from __future__ import annotations

import contextlib
import re
from typing import Annotated, Any, TypeVar

import msgspec

from agentkit.config import ReconnectConfig
from agentkit.kube import Kube, KubeError, Resource
from agentkit.kube import resources as r
from agentkit.peerinput import Checked, PeerInputError, convert, depth_of
from agentkit.retry import retrying

APP_LABEL = "pipeops-session"

# Every field is bounded by the Kubernetes rule of what it becomes, before anything is
# written: the session id names objects (``session-<id>``, a DNS-1035 label of at most 63
# characters, and ``session-<id>-home``) and is a label value; quantities follow the
# API server's grammar with at most 18 digits (an int64's worth, where it caps them);
# images follow the container image reference grammar (a name of at most 255 characters,
# a tag of at most 128, an optional digest); the user is an annotation and an env value.
SESSION_ID = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,53}[a-z0-9])?")  # fullmatch: one label
_DIGITS = r"(?:[0-9]{1,18}(?:\.[0-9]{0,18})?|\.[0-9]{1,18})"
QUANTITY = re.compile(
    rf"^{_DIGITS}(?:Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]{{1,2}})?$")
MAX_QUANTITY_LENGTH = 40
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = (rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])"
           r"(?::[0-9]{1,5})?")
IMAGE = re.compile(
    rf"^(?P<name>(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,128}))?$")
MAX_IMAGE_NAME = 255
MAX_PAYLOAD_DEPTH = 16  # a payload is flat; unknown keys are ignored, but not walked deeply


def _session_id(value: str) -> str:
    if not SESSION_ID.fullmatch(value):
        raise ValueError("expected 1 to 55 lowercase letters, digits or '-', starting and "
                         "ending with a letter or digit")
    return value


def _quantity(value: str) -> str:
    if len(value) > MAX_QUANTITY_LENGTH or not QUANTITY.fullmatch(value):
        raise ValueError("expected a Kubernetes quantity like 500m, 1.5, 2Gi "
                         "(at most 18 digits)")
    return value


def _image(value: str) -> str:
    match = IMAGE.fullmatch(value) if len(value) <= 512 else None
    if match is None or len(match.group("name")) > MAX_IMAGE_NAME:
        raise ValueError("expected a container image reference like "
                         "registry.example/team/app:1.2 (a name of at most 255 characters)")
    return value


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("expected printable characters only")
    return value


# an annotation and an env value: at most a DNS subdomain's length
User = Annotated[str, msgspec.Meta(max_length=253)]
Port = Annotated[int, msgspec.Meta(gt=0, lt=65536)]


class _Payload(Checked, kw_only=True):
    checks = {"session_id": _session_id}

    session_id: str = msgspec.field(name="sessionId")


class StartSession(_Payload, kw_only=True):
    checks = {"session_id": _session_id, "template": _image, "image": _image, "user": _printable,
              "storage": _quantity, "memory": _quantity, "cpu": _quantity}

    template: str
    user: User = ""
    image: str | None = None
    persistent_home: bool = msgspec.field(default=False, name="persistentHome")
    storage: str = "1Gi"
    memory: str | None = None
    cpu: str | None = None
    port: Port = 8080


class StopSession(_Payload, kw_only=True):
    delete_pvc: bool = msgspec.field(default=False, name="deletePVC")


class ScaleSession(_Payload, kw_only=True):
    pass


Payload = TypeVar("Payload", bound=_Payload)


PAYLOADS: dict[str, type[_Payload]] = {
    "start_session": StartSession,
    "stop_session": StopSession,
    "hibernate_session": ScaleSession,
    "wake_session": ScaleSession,
}


class CommandFailed(Exception):
    """The command was carried out and failed: ``str(exc)`` is the ``error`` to report."""


def object_name(session_id: str) -> str:
    return f"session-{session_id}"


def labels(session_id: str) -> dict[str, str]:
    return {"app": APP_LABEL, "session": session_id}


def _meta(p: _Payload, suffix: str = "") -> dict[str, Any]:
    return {"name": object_name(p.session_id) + suffix, "labels": labels(p.session_id)}


def deployment(p: StartSession) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "session",
        "image": p.image or p.template,
        "ports": [{"name": "session", "containerPort": p.port}],
        "env": [{"name": "SESSION_ID", "value": p.session_id},
                {"name": "SESSION_USER", "value": p.user}],
    }
    resources = {k: v for k, v in (("memory", p.memory), ("cpu", p.cpu)) if v}
    if resources:
        container["resources"] = {"requests": resources, "limits": resources}
    pod: dict[str, Any] = {"containers": [container]}
    if p.persistent_home:
        container["volumeMounts"] = [{"name": "home", "mountPath": "/home/session"}]
        pod["volumes"] = [{"name": "home", "persistentVolumeClaim": {
            "claimName": object_name(p.session_id) + "-home"}}]
    meta = _meta(p)
    meta["annotations"] = {"pipeops.io/user": p.user, "pipeops.io/template": p.template}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
        # Recreate: one session pod at a time (a ReadWriteOnce home cannot be attached to
        # a new pod while the old one holds it, and two pods of one session conflict).
        "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
                 "selector": {"matchLabels": labels(p.session_id)},
                 "template": {"metadata": {"labels": labels(p.session_id)}, "spec": pod}},
    }


def service(p: StartSession) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": _meta(p),
        "spec": {"type": "ClusterIP", "selector": labels(p.session_id),
                 "ports": [{"name": "session", "port": p.port, "targetPort": p.port,
                            "protocol": "TCP"}]},
    }


def pvc(p: StartSession) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(p, "-home"),
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": p.storage}}},
    }


# An update of an adopted object that lost a race with another writer is redone.
CONFLICT_RETRY = ReconnectConfig(backoff_base=0.05, backoff_max=0.5)
CONFLICT_ATTEMPTS = 4

# Fields the API server fixed when the object was made: an update must carry them over
# (a Deployment's selector is immutable; a Service keeps its cluster address).
_KEPT_SPEC = {
    "deployments": ("selector",),
    "services": ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"),
}


def converged(resource: Resource, existing: dict[str, Any], desired: dict[str, Any]
              ) -> dict[str, Any]:
    """``desired`` as an update of ``existing``: its spec, labels and annotations; the
    existing object's other metadata (resourceVersion, finalizers, owners) and the spec
    fields the API server fixed at creation."""
    metadata = {k: v for k, v in (existing.get("metadata") or {}).items()
                if k != "managedFields"}
    for key in ("labels", "annotations"):
        if key in desired["metadata"]:
            metadata[key] = {**(metadata.get(key) or {}), **desired["metadata"][key]}
    old_spec = existing.get("spec") or {}
    spec = dict(desired["spec"])
    spec.update({k: old_spec[k] for k in _KEPT_SPEC.get(resource.plural, ()) if k in old_spec})
    return {**desired, "metadata": metadata, "spec": spec}


class Sessions:
    """Carries out validated session commands in one namespace."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.ns = namespace

    async def run(self, action: str, payload: _Payload) -> dict[str, Any]:
        try:
            if isinstance(payload, StartSession):
                return await self.start(payload)
            if isinstance(payload, StopSession):
                return await self.stop(payload)
            replicas = 0 if action == "hibernate_session" else 1
            return await self.scale(payload, replicas)
        except KubeError as exc:
            raise CommandFailed(str(exc)) from None

    async def start(self, p: StartSession) -> dict[str, Any]:
        """Create the session's objects. Idempotent: an object of this session that already
        exists (a kept home volume, what an interrupted start left behind) is adopted, not
        an error; one of the same name that belongs to something else is. An adopted
        Deployment or Service is brought to what this start asks for (image, port,
        resources, one replica); a kept volume stays as it is. What this call created is
        deleted again if it fails or is cancelled half-way."""
        plan: list[tuple[Resource, dict[str, Any]]] = []
        if p.persistent_home:
            plan.append((r.PVCS, pvc(p)))
        plan += [(r.DEPLOYMENTS, deployment(p)), (r.SERVICES, service(p))]
        created: list[tuple[Resource, str]] = []
        result: dict[str, Any] = {"sessionId": p.session_id, "namespace": self.ns}
        try:
            for resource, body in plan:
                obj, made = await self._ensure(resource, body, p.session_id)
                if made:
                    created.append((resource, body["metadata"]["name"]))
                elif resource in (r.DEPLOYMENTS, r.SERVICES):
                    obj = await self._update(resource, obj, body)
                if resource == r.SERVICES:
                    result["serviceIP"] = (obj.get("spec") or {}).get("clusterIP", "")
                    result["port"] = p.port
        except BaseException:
            for resource, name in reversed(created):  # leave nothing half-made
                with contextlib.suppress(KubeError):
                    await self.kube.delete(resource, name, self.ns)
            raise
        result.update(deployment=object_name(p.session_id), service=object_name(p.session_id))
        if p.persistent_home:
            result["pvc"] = object_name(p.session_id) + "-home"
        return result

    async def _ensure(self, resource: Resource, body: dict[str, Any],
                      session_id: str) -> tuple[dict[str, Any], bool]:
        """The object, created or (if this session's already) adopted; and whether it
        was created here."""
        try:
            return await self.kube.create(resource, body, self.ns), True
        except KubeError as exc:
            if exc.status != 409:
                raise
        name = body["metadata"]["name"]
        existing = await self.kube.get(resource, name, self.ns)
        found = (existing.get("metadata") or {}).get("labels") or {}
        if any(found.get(k) != v for k, v in labels(session_id).items()):
            raise CommandFailed(f"{resource.plural}/{name} already exists in namespace {self.ns} "
                                f"and is not session {session_id}'s")
        return existing, False

    async def _update(self, resource: Resource, existing: dict[str, Any],
                      desired: dict[str, Any]) -> dict[str, Any]:
        """``existing`` brought to ``desired``; read again and redone when it changed
        meanwhile (409: a controller updating its status), a few times."""
        name = desired["metadata"]["name"]
        async for attempt in retrying(CONFLICT_RETRY, max_attempts=CONFLICT_ATTEMPTS,
                                      retry_on=lambda e: isinstance(e, KubeError)
                                      and e.status == 409):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    existing = await self.kube.get(resource, name, self.ns)
                return await self.kube.replace(resource, converged(resource, existing, desired),
                                               self.ns)
        raise AssertionError("unreachable: retrying re-raises the last failure")

    async def stop(self, p: StopSession) -> dict[str, Any]:
        name = object_name(p.session_id)
        targets = [(r.DEPLOYMENTS, name), (r.SERVICES, name)]
        if p.delete_pvc:
            targets.append((r.PVCS, name + "-home"))
        deleted: list[str] = []
        for resource, obj in targets:
            try:
                await self.kube.delete(resource, obj, self.ns)
                deleted.append(f"{resource.plural}/{obj}")
            except KubeError as exc:
                if exc.status != 404:
                    raise
        if not deleted:
            raise CommandFailed(f"session {p.session_id} not found in namespace {self.ns}")
        return {"sessionId": p.session_id, "namespace": self.ns, "deleted": deleted}

    async def scale(self, p: _Payload, replicas: int) -> dict[str, Any]:
        name = object_name(p.session_id)
        await self.kube.patch(r.DEPLOYMENTS, name, {"spec": {"replicas": replicas}}, self.ns,
                              subresource="scale",
                              operation=f"scale deployments {self.ns}/{name}")
        return {"sessionId": p.session_id, "namespace": self.ns, "replicas": replicas}


def decode(kind: type[Payload], payload: Any) -> Payload:
    """``payload`` (parsed JSON) as the command's record, strictly; ValueError
    ``invalid payload: <what was wrong>`` otherwise (never anything else)."""
    if not isinstance(payload, dict):
        raise ValueError("invalid payload: expected a JSON object")
    if depth_of(payload, MAX_PAYLOAD_DEPTH) > MAX_PAYLOAD_DEPTH:
        raise ValueError("invalid payload: nested too deeply")
    try:
        return convert(payload, kind, strict=True)
    except PeerInputError as exc:
        raise ValueError(f"invalid payload: {exc}") from None


def validate(action: str, payload: Any) -> _Payload:
    """The validated payload; ValueError with a readable reason otherwise."""
    model = PAYLOADS.get(action)
    if model is None:
        raise ValueError(f"unknown action {action!r}; expected one of " + ", ".join(PAYLOADS))
    return decode(model, payload)
