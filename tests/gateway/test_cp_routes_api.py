"""The dev control plane's route endpoints (PROTOCOL.md section 4), over HTTP against the
real process: auth, upsert counters, unregister, paging, batched sync (one bad ingress
never blocks the batch; a sync cut off deletes nothing), host conflicts, faults."""

from __future__ import annotations

import time
import uuid
from typing import Any

from pipeops_controlplane.testing import ControlPlane
from tests.tunnel.e2e_helpers import register


def _auth(reg: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {reg['token']}"}


def route(reg: dict[str, Any], hostname: str, path: str = "/", **changes: Any) -> dict[str, Any]:
    body = {"cluster_id": reg["cluster_id"], "hostname": hostname, "path": path,
            "namespace": "apps", "ingress_name": "web", "path_type": "Prefix",
            "service_name": "web", "service_port": 80, "tls": False,
            "routing_mode": "tunnel", "public_endpoint": ""}
    body.update(changes)
    return body


def call(cp: ControlPlane, reg: dict[str, Any], verb: str, body: Any) -> tuple[int, Any]:
    return cp.request("POST", f"/api/v1/gateway/routes/{verb}", body, headers=_auth(reg))


def held(cp: ControlPlane, reg: dict[str, Any], limit: int = 1000) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    token = ""
    while True:
        query = f"cluster_id={reg['cluster_id']}&limit={limit}"
        if token:
            query += f"&continue={token}"
        status, body = cp.request("GET", f"/api/v1/gateway/routes?{query}", headers=_auth(reg))
        assert status == 200, body
        out += body["routes"]
        token = body["continue"]
        if not token:
            return out


def ingress(name: str, *hosts: str, namespace: str = "apps") -> dict[str, Any]:
    return {"namespace": namespace, "ingress_name": name, "annotations": {},
            "rules": [{"host": h, "tls": False,
                       "paths": [{"path": "/", "path_type": "Prefix", "service_name": name,
                                  "service_port": 80}]} for h in hosts]}


def sync(reg: dict[str, Any], sync_id: str, batch: int, last: bool,
         ingresses: list[Any]) -> dict[str, Any]:
    return {"cluster_id": reg["cluster_id"], "sync_id": sync_id, "batch": batch,
            "last": last, "public_endpoint": "", "routing_mode": "tunnel",
            "ingress_controller": {"name": "ingress-nginx", "namespace": "ingress-nginx",
                                   "port": 80},
            "ingresses": ingresses}


def debug_route(cp: ControlPlane, reg: dict[str, Any], hostname: str, path: str = "/"
                ) -> dict[str, Any] | None:
    return next((r for r in cp.routes(reg["cluster_id"])
                 if r["hostname"] == hostname and r["path"] == path), None)


def test_register_counts_writes_and_duplicates(controlplane: ControlPlane,
                                               reg: dict[str, Any]) -> None:
    host = f"a-{uuid.uuid4().hex[:6]}.example.test"
    status, body = call(controlplane, reg, "register", route(reg, host))
    assert status == 201 and body["created"] and body["route"]["service_port"] == 80
    status, body = call(controlplane, reg, "register", route(reg, host))
    assert status == 200 and not body["changed"]
    status, body = call(controlplane, reg, "register", route(reg, host, service_port=8080))
    assert status == 200 and body["changed"]
    seen = debug_route(controlplane, reg, host)
    assert seen is not None
    assert (seen["registrations"], seen["duplicates"]) == (2, 1)
    assert seen["service_port"] == 8080


def test_register_refuses_bad_routes_and_bad_tokens(controlplane: ControlPlane,
                                                    reg: dict[str, Any]) -> None:
    for bad in ({"hostname": "UPPER.example.test"}, {"hostname": "a..b"},
                {"path": "no-slash"}, {"service_port": 0}, {"path_type": "Regex"},
                {"unexpected": 1}):
        status, _ = call(controlplane, reg, "register", {**route(reg, "x.example.test"), **bad})
        assert status == 422, bad
    status, _ = controlplane.request("POST", "/api/v1/gateway/routes/register",
                                     route(reg, "x.example.test"),
                                     headers={"Authorization": "Bearer wrong"})
    assert status == 401
    other = {**reg, "cluster_id": str(uuid.uuid4())}
    assert call(controlplane, reg, "register", route(other, "x.example.test"))[0] == 404
    assert debug_route(controlplane, reg, "x.example.test") is None


def test_a_host_belongs_to_one_cluster(controlplane: ControlPlane, reg: dict[str, Any]) -> None:
    other = register(controlplane)
    host = f"c-{uuid.uuid4().hex[:6]}.example.test"
    assert call(controlplane, reg, "register", route(reg, host))[0] == 201
    status, body = call(controlplane, other, "register", route(other, host, "/other"))
    assert status == 409 and "another cluster" in body["detail"]
    # the owner unregistering it frees the host
    assert call(controlplane, reg, "unregister",
                {"cluster_id": reg["cluster_id"], "hostname": host})[1] == {"removed": 1}
    assert call(controlplane, other, "register", route(other, host, "/other"))[0] == 201


def test_unregister_one_path_or_the_whole_host_and_unknown_is_fine(
        controlplane: ControlPlane, reg: dict[str, Any]) -> None:
    host = f"u-{uuid.uuid4().hex[:6]}.example.test"
    for path in ("/", "/api", "/docs"):
        assert call(controlplane, reg, "register", route(reg, host, path))[0] == 201
    cid = reg["cluster_id"]
    assert call(controlplane, reg, "unregister",
                {"cluster_id": cid, "hostname": host, "path": "/api"})[1] == {"removed": 1}
    assert call(controlplane, reg, "unregister",
                {"cluster_id": cid, "hostname": host, "path": "/api"})[1] == {"removed": 0}
    assert call(controlplane, reg, "unregister",
                {"cluster_id": cid, "hostname": host})[1] == {"removed": 2}
    assert call(controlplane, reg, "unregister",
                {"cluster_id": cid, "hostname": "never.example.test"})[1] == {"removed": 0}
    assert held(controlplane, reg) == []


def test_list_pages_through_every_route_once(controlplane: ControlPlane,
                                             reg: dict[str, Any]) -> None:
    names = [f"p{i:03d}" for i in range(25)]
    body = sync(reg, "s1", 0, True, [ingress(n, f"{n}.example.test") for n in names])
    status, reply = call(controlplane, reg, "sync", body)
    assert status == 200 and reply["accepted"] == 25
    routes = held(controlplane, reg, limit=7)
    assert [r["hostname"] for r in routes] == [f"{n}.example.test" for n in names]
    status, _ = controlplane.request(
        "GET", f"/api/v1/gateway/routes?cluster_id={reg['cluster_id']}&continue=garbage",
        headers=_auth(reg))
    assert status == 422


def test_sync_in_batches_drops_only_on_the_last_batch(controlplane: ControlPlane,
                                                      reg: dict[str, Any]) -> None:
    first = [ingress(f"i{i}", f"i{i}.example.test") for i in range(6)]
    assert call(controlplane, reg, "sync", sync(reg, "a", 0, True, first))[0] == 200
    # a new full set in three batches, without i0 and i1: nothing dropped before the last
    second = [ingress(f"i{i}", f"i{i}.example.test") for i in range(2, 8)]
    for batch in range(2):
        status, reply = call(controlplane, reg, "sync",
                             sync(reg, "b", batch, False, second[batch * 2:batch * 2 + 2]))
        assert status == 200 and "removed" not in reply
        assert len(held(controlplane, reg)) >= 6
    status, reply = call(controlplane, reg, "sync", sync(reg, "b", 2, True, second[4:]))
    assert status == 200 and reply["removed"] == 2
    assert sorted(r["hostname"] for r in held(controlplane, reg)) == \
        sorted(f"i{i}.example.test" for i in range(2, 8))
    # unchanged routes named again are confirmations, not registrations
    seen = debug_route(controlplane, reg, "i3.example.test")
    assert seen is not None and seen["registrations"] == 1 and seen["confirmations"] == 1


def test_a_sync_cut_off_half_way_deletes_nothing(controlplane: ControlPlane,
                                                 reg: dict[str, Any]) -> None:
    full = [ingress(f"k{i}", f"k{i}.example.test") for i in range(4)]
    assert call(controlplane, reg, "sync", sync(reg, "a", 0, True, full))[0] == 200
    # batch 1 never arrives: the last batch (2) is refused and nothing is removed
    assert call(controlplane, reg, "sync", sync(reg, "b", 0, False, full[:1]))[0] == 200
    status, reply = call(controlplane, reg, "sync", sync(reg, "b", 2, True, full[1:2]))
    assert status == 409 and "nothing was removed" in reply["detail"]
    assert len(held(controlplane, reg)) == 4


def test_one_bad_ingress_never_blocks_its_batch(controlplane: ControlPlane,
                                                reg: dict[str, Any]) -> None:
    other = register(controlplane)
    taken = f"taken-{uuid.uuid4().hex[:6]}.example.test"
    assert call(controlplane, other, "register", route(other, taken))[0] == 201
    bad = ingress("bad", "Not A Host")
    items = [ingress("good1", "g1.example.test"), bad, ingress("stolen", taken),
             {"namespace": "apps"}, ingress("good2", "g2.example.test")]
    status, reply = call(controlplane, reg, "sync", sync(reg, "s", 0, True, items))
    assert status == 200, reply
    assert reply["accepted"] == 2
    assert [r["ingress_name"] for r in reply["rejected"]] == ["bad", ""]
    assert "rules.0.host" in reply["rejected"][0]["reason"]
    assert [c["hostname"] for c in reply["conflicts"]] == [taken]
    assert sorted(r["hostname"] for r in held(controlplane, reg)) == \
        ["g1.example.test", "g2.example.test"]
    # a malformed envelope is the whole batch's 422
    status, _ = call(controlplane, reg, "sync", {**sync(reg, "s", 0, True, []), "batch": -1})
    assert status == 422


def test_route_faults_apply_to_route_calls_only(controlplane: ControlPlane,
                                                reg: dict[str, Any]) -> None:
    try:
        controlplane.set_fault("429", "routes")
        started = time.monotonic()
        status, _ = controlplane.request("POST", "/api/v1/gateway/routes/register",
                                         route(reg, "f.example.test"), headers=_auth(reg))
        assert status == 429
        assert time.monotonic() - started < 5
        # the heartbeat is not a route call
        status, _ = controlplane.request(
            "GET", f"/api/v1/tunnel/status?cluster_id={reg['cluster_id']}"
                   f"&agent_id={reg['agent_id']}", headers=_auth(reg))
        assert status == 200
        assert controlplane.faults()["hits"] == 1
    finally:
        controlplane.clear_fault()
    assert call(controlplane, reg, "register", route(reg, "f.example.test"))[0] == 201
    requests = controlplane.route_requests()
    assert requests["register"] >= 1


def test_forgetting_a_cluster_drops_its_routes(controlplane: ControlPlane) -> None:
    reg = register(controlplane)
    host = f"gone-{uuid.uuid4().hex[:6]}.example.test"
    assert call(controlplane, reg, "register", route(reg, host))[0] == 201
    controlplane.forget(reg["cluster_id"])
    assert controlplane.routes(reg["cluster_id"]) == []


def test_debug_routes_filter_by_hostname(controlplane: ControlPlane, reg: dict[str, Any]) -> None:
    host = f"f-{uuid.uuid4().hex[:6]}.example.test"
    for path in ("/", "/a"):
        assert call(controlplane, reg, "register", route(reg, host, path))[0] == 201
    status, body = controlplane.request("GET", f"/debug/routes?hostname={host}")
    assert status == 200 and [r["path"] for r in body["routes"]] == ["/a", "/"]
    status, body = controlplane.request("GET", "/debug/routes?hostname=none.example.test")
    assert body["routes"] == []
