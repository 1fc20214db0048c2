"""The admin API under `/_kubesim/` (admin token only): faults, logs, tokens, traffic stats.

    GET  /_kubesim/info              {"resourceVersion", "compacted", "watches"}
    POST /_kubesim/watches/drop      {"expired": false} -> {"dropped": n}; with expired=true
                                     each open watch first gets an ERROR event (410)
    POST /_kubesim/watches/hang      every open watch stays open and gets no more events
                                     (new watches work) -> {"hung": n}
    POST /_kubesim/history/expire    every resourceVersion older than now becomes 410
    POST /_kubesim/delay             {"seconds": 0.5}: delay every API answer (0 = off)
    POST /_kubesim/restart           {"downtime": 0.2}: a simulated apiserver restart: open
                                     watches and log follows end, history is expired (the
                                     new watch cache starts now), 503 for `downtime` seconds
    POST /_kubesim/logs              {"namespace", "pod", "container"?, "lines": [...]}
    POST /_kubesim/tokens            {"token", "serviceAccount": "ns/name" | "user", "rules"}
    GET  /_kubesim/stats             {"total": {requests, bytes}, "paths": {path?query: ...}}
    POST /_kubesim/stats/reset
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from kubesim import errors

if TYPE_CHECKING:
    from kubesim.api import Cluster


def _ok(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body).encode(), media_type="application/json")


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise errors.bad_request(f"admin body is not JSON: {e}") from e
    if not isinstance(body, dict):
        raise errors.bad_request("admin body must be a JSON object")
    return body


def _seconds(body: dict[str, Any], key: str) -> float:
    value = body.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            0 <= value <= 3600):
        raise errors.bad_request(f"{key!r} must be a number of seconds from 0 to 3600")
    return float(value)


async def handle(cluster: Cluster, request: Request) -> Response:
    action = request.url.path.removeprefix("/_kubesim/").strip("/")
    store = cluster.store
    if request.method == "GET":
        if action == "stats":
            return _ok(cluster.stats.snapshot())
        if action == "info":
            return _ok({"resourceVersion": store.rv, "compacted": store.compacted,
                        "watches": store.subscriber_count()})
        raise errors.no_such_resource()
    if request.method != "POST":
        raise errors.method_not_allowed()
    body = await _json(request)
    if action == "stats/reset":
        cluster.stats.reset()
        return _ok({})
    if action == "watches/drop":
        return _ok({"dropped": store.drop_watches(expired=bool(body.get("expired")))})
    if action == "watches/hang":
        return _ok({"hung": store.hang_watches()})
    if action == "history/expire":
        return _ok({"expired": store.expire_history(), "resourceVersion": store.rv})
    if action == "delay":
        cluster.faults.delay = _seconds(body, "seconds")
        return _ok({"seconds": cluster.faults.delay})
    if action == "restart":
        downtime = _seconds(body, "downtime")
        dropped = store.drop_watches()
        cluster.logs.close_all()
        store.expire_history()
        cluster.faults.unavailable_until = time.monotonic() + downtime
        return _ok({"dropped": dropped, "resourceVersion": store.rv})
    if action == "logs":
        return _ok(append_logs(cluster, body))
    if action == "tokens":
        try:
            ident = cluster.auth.add(body)
        except ValueError as e:
            raise errors.bad_request(str(e)) from e
        return _ok({"user": ident.user})
    raise errors.no_such_resource()


def append_logs(cluster: Cluster, body: dict[str, Any]) -> dict[str, Any]:
    rt = cluster.registry.lookup("", "v1", "pods")
    assert rt is not None
    namespace, pod_name = str(body.get("namespace", "default")), str(body.get("pod", ""))
    lines = body.get("lines")
    if not isinstance(lines, list):
        raise errors.bad_request("'lines' must be a list of strings")
    pod = cluster.get(rt, namespace, pod_name)
    names = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
    container = body.get("container") or (names[0] if names else "")
    if container not in names:
        raise errors.bad_request(f"container {container} is not valid for pod {pod_name}")
    total = cluster.logs.append((namespace, pod_name, container), [str(x) for x in lines])
    return {"lines": total, "container": container}
