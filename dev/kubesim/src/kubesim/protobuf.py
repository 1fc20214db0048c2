"""Request bodies in `application/vnd.kubernetes.protobuf`, for the kinds clients send so.

client-go's typed clientsets (and so Helm's release storage, which writes Secrets) send
protobuf bodies and accept JSON answers. kubesim answers in JSON only, and decodes the
protobuf of just the messages those clients write: Secret, ConfigMap, DeleteOptions,
SelfSubjectAccessReview (`kubectl auth can-i`) and what kubectl's imperative commands
send (`create namespace|serviceaccount|deployment|service`), inside the `k8s\\x00` +
`runtime.Unknown` envelope. Field numbers are those of k8s.io/api's generated.proto;
a field outside these tables that has content, or any other kind, answers 415 (never a
silent loss); `kubectl apply -f` and `create -f` send JSON and always work.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from kubesim.errors import ApiError, bad_request

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

# A schema maps a field number to (json name, type). Types: "string", "bytes" (base64 in
# JSON), "int", "bool", "time", "intorstr", "strmap", "bytesmap", "strings" (repeated
# string), or a nested schema name; a name ending in "[]" is a repeated message.
_SCHEMAS: dict[str, dict[int, tuple[str, str]]] = {
    "TypeMeta": {1: ("apiVersion", "string"), 2: ("kind", "string")},
    "Unknown": {1: ("typeMeta", "TypeMeta"), 2: ("raw", "raw"),
                3: ("contentEncoding", "string"), 4: ("contentType", "string")},
    "ObjectMeta": {
        1: ("name", "string"), 2: ("generateName", "string"), 3: ("namespace", "string"),
        5: ("uid", "string"), 6: ("resourceVersion", "string"), 7: ("generation", "int"),
        8: ("creationTimestamp", "time"), 9: ("deletionTimestamp", "time"),
        10: ("deletionGracePeriodSeconds", "int"), 11: ("labels", "strmap"),
        12: ("annotations", "strmap"), 13: ("ownerReferences", "OwnerReference[]"),
        14: ("finalizers", "strings"),
    },
    "OwnerReference": {1: ("kind", "string"), 3: ("name", "string"), 4: ("uid", "string"),
                       5: ("apiVersion", "string"), 6: ("controller", "bool"),
                       7: ("blockOwnerDeletion", "bool")},
    "Time": {1: ("seconds", "int"), 2: ("nanos", "int")},
    "Secret": {1: ("metadata", "ObjectMeta"), 2: ("data", "bytesmap"), 3: ("type", "string"),
               4: ("stringData", "strmap"), 5: ("immutable", "bool")},
    "ConfigMap": {1: ("metadata", "ObjectMeta"), 2: ("data", "strmap"),
                  3: ("binaryData", "bytesmap"), 4: ("immutable", "bool")},
    "DeleteOptions": {1: ("gracePeriodSeconds", "int"), 2: ("preconditions", "Preconditions"),
                      3: ("orphanDependents", "bool"), 4: ("propagationPolicy", "string"),
                      5: ("dryRun", "strings")},
    "Preconditions": {1: ("uid", "string"), 2: ("resourceVersion", "string")},
    "SelfSubjectAccessReview": {1: ("metadata", "ObjectMeta"),
                                2: ("spec", "SelfSubjectAccessReviewSpec")},
    "SelfSubjectAccessReviewSpec": {1: ("resourceAttributes", "ResourceAttributes")},
    "ResourceAttributes": {1: ("namespace", "string"), 2: ("verb", "string"),
                           3: ("group", "string"), 4: ("version", "string"),
                           5: ("resource", "string"), 6: ("subresource", "string"),
                           7: ("name", "string")},
    "MapEntry": {1: ("key", "raw"), 2: ("value", "raw")},
    # What kubectl's imperative generators (create namespace/serviceaccount/deployment/
    # service, run) send. Fields they never set are left out; unknown ones are skipped.
    "Namespace": {1: ("metadata", "ObjectMeta"), 2: ("spec", "NamespaceSpec")},
    "NamespaceSpec": {1: ("finalizers", "strings")},
    "ServiceAccount": {1: ("metadata", "ObjectMeta"),
                       4: ("automountServiceAccountToken", "bool")},
    "Deployment": {1: ("metadata", "ObjectMeta"), 2: ("spec", "DeploymentSpec")},
    "DeploymentSpec": {1: ("replicas", "int"), 2: ("selector", "LabelSelector"),
                       3: ("template", "PodTemplateSpec"), 4: ("strategy", "Strategy"),
                       5: ("minReadySeconds", "int"), 6: ("revisionHistoryLimit", "int"),
                       7: ("paused", "bool"), 9: ("progressDeadlineSeconds", "int")},
    "Strategy": {1: ("type", "string")},
    "LabelSelector": {1: ("matchLabels", "strmap"),
                      2: ("matchExpressions", "LabelSelectorRequirement[]")},
    "LabelSelectorRequirement": {1: ("key", "string"), 2: ("operator", "string"),
                                 3: ("values", "strings")},
    "PodTemplateSpec": {1: ("metadata", "ObjectMeta"), 2: ("spec", "PodSpec")},
    "Pod": {1: ("metadata", "ObjectMeta"), 2: ("spec", "PodSpec")},
    "PodSpec": {2: ("containers", "Container[]"), 3: ("restartPolicy", "string"),
                4: ("terminationGracePeriodSeconds", "int"), 6: ("dnsPolicy", "string"),
                7: ("nodeSelector", "strmap"), 8: ("serviceAccountName", "string"),
                10: ("nodeName", "string"), 20: ("initContainers", "Container[]")},
    "Container": {1: ("name", "string"), 2: ("image", "string"), 3: ("command", "strings"),
                  4: ("args", "strings"), 5: ("workingDir", "string"),
                  6: ("ports", "ContainerPort[]"), 7: ("env", "EnvVar[]"),
                  14: ("imagePullPolicy", "string"), 16: ("stdin", "bool"),
                  17: ("stdinOnce", "bool"), 18: ("tty", "bool")},
    "ContainerPort": {1: ("name", "string"), 2: ("hostPort", "int"),
                      3: ("containerPort", "int"), 4: ("protocol", "string")},
    "EnvVar": {1: ("name", "string"), 2: ("value", "string")},
    "Service": {1: ("metadata", "ObjectMeta"), 2: ("spec", "ServiceSpec")},
    "ServiceSpec": {1: ("ports", "ServicePort[]"), 2: ("selector", "strmap"),
                    3: ("clusterIP", "string"), 4: ("type", "string"),
                    5: ("externalIPs", "strings"), 7: ("sessionAffinity", "string"),
                    10: ("externalName", "string")},
    "ServicePort": {1: ("name", "string"), 2: ("protocol", "string"), 3: ("port", "int"),
                    4: ("targetPort", "intorstr"), 5: ("nodePort", "int")},
    "IntOrString": {1: ("type", "int"), 2: ("intVal", "int"), 3: ("strVal", "string")},
}
DECODABLE = ("Secret", "ConfigMap", "DeleteOptions", "SelfSubjectAccessReview", "Namespace",
             "ServiceAccount", "Deployment", "Pod", "Service")


class _Malformed(Exception):
    pass


class _Unknown(Exception):
    pass


# Fields whose content kubesim drops on purpose (the server ignores or rewrites them):
# selfLink, clusterName, managedFields, and the status of kinds whose status it sets.
_IGNORED = {("ObjectMeta", 4), ("ObjectMeta", 15), ("ObjectMeta", 17)} | {
    (kind, 3) for kind in ("Namespace", "Deployment", "Pod", "Service",
                           "SelfSubjectAccessReview")}


def _is_zero(value: int | bytes, depth: int = 0) -> bool:
    """True for 0, b"", or an embedded message made only of zero values."""
    if value in (0, b""):
        return True
    if not isinstance(value, bytes) or depth > 8:
        return False
    try:
        return all(_is_zero(v, depth + 1) for _, v in _fields(value))
    except _Malformed:
        return False


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Malformed("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs: ints for varints/fixed, bytes for length-delimited."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise _Malformed("truncated field")
            value, pos = buf[pos:pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = int.from_bytes(buf[pos:pos + size], "little"), pos + size
        else:
            raise _Malformed(f"unsupported wire type {wire}")
        out.append((number, value))
    return out


# Go encodes every non-pointer field, zero or not; JSON omits the empty ones, so we drop
# zero values except in these pointer fields, where a zero is a choice (replicas: 0).
_KEEP_ZERO = {"replicas", "revisionHistoryLimit", "progressDeadlineSeconds",
              "terminationGracePeriodSeconds", "automountServiceAccountToken",
              "gracePeriodSeconds", "intVal"}


def _message(buf: bytes, schema_name: str) -> dict[str, Any]:
    schema = _SCHEMAS[schema_name]
    obj: dict[str, Any] = {}
    for number, value in _fields(buf):
        if number not in schema:
            # Go writes zero values too; only a field with content is lost, and losing
            # it silently would be worse than refusing the body.
            if (schema_name, number) not in _IGNORED and not _is_zero(value):
                raise _Unknown(f"field {number} of {schema_name}")
            continue
        name, typ = schema[number]
        if typ == "int" and isinstance(value, int):
            obj[name] = value - (1 << 64) if value >= 1 << 63 else value
        elif typ == "bool" and isinstance(value, int):
            obj[name] = bool(value)
        elif not isinstance(value, bytes):
            raise _Malformed(f"field {name} has the wrong wire type")
        elif typ == "raw":
            obj[name] = value
        elif typ == "string":
            obj[name] = value.decode()
        elif typ == "bytes":
            obj[name] = base64.b64encode(value).decode()
        elif typ == "strings":
            obj.setdefault(name, []).append(value.decode())
        elif typ in ("strmap", "bytesmap"):
            entry = _message(value, "MapEntry")
            key = entry.get("key", b"").decode()
            raw = entry.get("value", b"")
            obj.setdefault(name, {})[key] = (
                raw.decode() if typ == "strmap" else base64.b64encode(raw).decode())
        elif typ == "intorstr":
            v = _message(value, "IntOrString")
            obj[name] = v.get("strVal", "") if v.get("type") == 1 else v.get("intVal", 0)
        elif typ == "time":
            t = _message(value, "Time")
            if t.get("seconds"):
                stamp = datetime.fromtimestamp(t["seconds"], UTC)
                obj[name] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif typ.endswith("[]"):
            obj.setdefault(name, []).append(_message(value, typ[:-2]))
        else:
            obj[name] = _message(value, typ)
    return {k: v for k, v in obj.items()
            if k in _KEEP_ZERO or not (v in ("", 0, False) or v == {})}


def decode(raw: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf-encoded object; 400 if malformed, 415 if not supported."""
    if not raw.startswith(MAGIC):
        raise bad_request("protobuf body does not start with the k8s magic prefix")
    try:
        envelope = _message(raw[len(MAGIC):], "Unknown")
        type_meta = envelope.get("typeMeta", {})
        kind = type_meta.get("kind", "")
        if kind not in DECODABLE:
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - kubesim "
                           f"decodes protobuf only for {', '.join(DECODABLE)}; send "
                           "application/json")
        obj = _message(envelope.get("raw", b""), kind)
    except _Unknown as e:
        raise ApiError(415, "UnsupportedMediaType",
                       f"kubesim cannot decode {e} from protobuf; send application/json") from e
    except (_Malformed, UnicodeDecodeError, OverflowError, ValueError) as e:
        raise bad_request(f"unable to decode protobuf body: {e}") from e
    return {"apiVersion": type_meta.get("apiVersion", ""), "kind": kind, **obj}
