"""Watches on the real API server: bookmarks, a 410 after etcd compaction, and the tunnel's
session status reporter and the gateway's route sync living through compaction and an API
server restart.

The cluster here runs without the watch cache, so a watch or an exact list reads etcd and
a compacted revision is a real 410 from etcd (with the cache, the API server answers 410
from the cache's own window instead; the session-shared cluster covers that path in
test_differential.py).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentkit.config import KubernetesConfig, ReconnectConfig
from agentkit.events import EventBus
from agentkit.kube import LazyKube
from agentkit.status import ServiceStatus
from pipeops_controlplane.testing import ControlPlane
from pipeops_tunnel.session_status import SessionStatus
from realkube.testing import RealKube
from tests.gateway.harness import (
    GatewayRun,
    apply,
    ingress,
    kubectl,
    namespace,
    wait_table,
    write_identity,
)
from tests.realkube.test_harness import _deployment
from tests.tunnel.agent_helpers import until
from tests.tunnel.e2e_helpers import register

NS = "watched"
FAST = ReconnectConfig(backoff_base=0.05, backoff_max=0.2)


@pytest.fixture(scope="module")
def rk() -> Iterator[RealKube]:
    with RealKube(nodes=1, watch_cache=False) as cluster:
        cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        yield cluster


def _events(rk: RealKube, path: str, count: int, timeout: float = 15) -> list[dict[str, Any]]:
    conn = http.client.HTTPSConnection("127.0.0.1", rk.port, context=rk.ssl_context(),
                                       timeout=timeout)
    conn.request("GET", path, headers={"Authorization": f"Bearer {rk.token}"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    events = []
    try:
        while len(events) < count and (line := resp.readline()):
            events.append(json.loads(line))
    finally:
        conn.close()
    return events


def _cm(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": NS}, "data": {"n": "0"}}


def test_a_bookmark_comes_before_the_watch_times_out(rk: RealKube) -> None:
    events = _events(rk, f"/api/v1/namespaces/{NS}/configmaps?watch=1&allowWatchBookmarks=true"
                         "&timeoutSeconds=4&labelSelector=none%3Dnone", 1)
    assert [e["type"] for e in events] == ["BOOKMARK"]
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) > 0


def test_a_watch_or_list_from_a_compacted_revision_is_410(rk: RealKube) -> None:
    created = rk.apply(_cm("compacted"))
    old = created["metadata"]["resourceVersion"]
    for n in range(3):
        status, _ = rk.request("PATCH", f"/api/v1/namespaces/{NS}/configmaps/compacted",
                               {"data": {"n": str(n + 1)}},
                               content_type="application/merge-patch+json")
        assert status == 200
    # before compaction the old revision is still there to watch from
    events = _events(rk, f"/api/v1/namespaces/{NS}/configmaps?watch=1&resourceVersion={old}"
                         "&fieldSelector=metadata.name%3Dcompacted", 3)
    assert [e["type"] for e in events] == ["MODIFIED"] * 3
    assert rk.compact() > int(old)
    events = _events(rk, f"/api/v1/namespaces/{NS}/configmaps?watch=1&resourceVersion={old}", 1)
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"
    status, body = rk.request(
        "GET", f"/api/v1/namespaces/{NS}/configmaps?resourceVersion={old}"
               "&resourceVersionMatch=Exact")
    assert status == 410 and body["reason"] == "Expired", body


@pytest.fixture
async def kube(rk: RealKube) -> AsyncIterator[LazyKube]:
    lazy = LazyKube(KubernetesConfig(in_cluster=False, kubeconfig=rk.kubeconfig),
                    ServiceStatus("tunnel", "test", EventBus("tunnel")))
    yield lazy
    await lazy.aclose()


def _session(session_id: str, replicas: int = 1) -> dict[str, Any]:
    deployment = _deployment(f"session-{session_id}", NS, replicas)
    labels = {"app": "pipeops-session", "session": session_id}
    deployment["metadata"]["labels"] = labels
    deployment["spec"]["selector"] = {"matchLabels": labels}
    deployment["spec"]["template"]["metadata"]["labels"] = labels
    return deployment


async def test_session_status_loses_nothing_through_compaction_and_a_restart(
        rk: RealKube, kube: LazyKube) -> None:
    sent: list[dict[str, Any]] = []
    reporter = SessionStatus(kube, NS, FAST)
    reporter.attach(lambda m: sent.append(m) is None)

    def states() -> dict[str, str]:
        return {m["sessionId"]: m["state"] for m in sent}

    await asyncio.to_thread(rk.apply, _session("before"))
    task = asyncio.create_task(reporter.run())
    try:
        await until(lambda: states().get("before") == "running", timeout=60,
                    what="the listed session running (its pod Ready on a kwok node)")
        # compaction under the open watch, then changes: nothing missed
        await asyncio.to_thread(rk.compact)
        await asyncio.to_thread(rk.apply, _session("after-compaction"))
        await until(lambda: states().get("after-compaction") == "running", timeout=60,
                    what="a session made after the compaction")
        # the API server restarted under the watch; meanwhile nothing can change, and
        # right after it a session is hibernated and another deleted
        await asyncio.to_thread(rk.restart_apiserver, 0.5)
        status, _ = await asyncio.to_thread(
            rk.request, "PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/session-before",
            {"spec": {"replicas": 0}}, content_type="application/merge-patch+json")
        assert status == 200
        status, _ = await asyncio.to_thread(
            rk.request, "DELETE",
            f"/apis/apps/v1/namespaces/{NS}/deployments/session-after-compaction")
        assert status == 200
        await until(lambda: states() == {"before": "hibernated",
                                         "after-compaction": "stopped"}, timeout=60,
                    what="both changes after the restart reported")
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_route_sync_loses_nothing_through_compaction_a_restart_and_a_410(
        rk: RealKube, tmp_path: Path) -> None:
    """The gateway's table (held by the dev control plane) follows the Ingresses: through
    a compaction under its open watch; and through an API server restart while the
    gateway is frozen (SIGSTOP), during which the Ingresses change and etcd is compacted
    past every revision it saw, so nothing it could resume from is left. The restart
    ends its watches with an error (not a clean end), so it lists afresh rather than
    resuming into the 410; the 410 itself is the test above. The periodic resync is out
    of reach (10 min): only the watch path acts."""
    ns = f"gw-{uuid.uuid4().hex[:6]}"
    namespace(rk, ns)  # type: ignore[arg-type]
    a, b, c, d = (f"{x}.{ns}.example.test" for x in "abcd")
    apply(rk, {"apiVersion": "v1", "kind": "Service",  # type: ignore[arg-type]
               "metadata": {"name": "web", "namespace": ns},
               "spec": {"ports": [{"name": "http", "port": 8080}]}},
          ingress("web", a, b, namespace=ns, port="http"))
    state = tmp_path / "state"
    state.mkdir()
    with ControlPlane() as cp:
        reg = register(cp)
        write_identity(state, reg)
        cid = reg["cluster_id"]
        run = GatewayRun(cp, rk.kubeconfig, state, resync=600, watch_timeout=600,
                         extra=["--log-level", "debug"]).start()
        try:
            wait_table(cp, cid, {(a, "/"), (b, "/")}, timeout=30, namespace=ns)
            # compaction under the open watch, then a change: seen
            rk.compact()
            apply(rk, ingress("other", c, namespace=ns, port="http"))  # type: ignore[arg-type]
            wait_table(cp, cid, {(a, "/"), (b, "/"), (c, "/")}, timeout=30, namespace=ns)

            assert run.proc is not None
            frozen_at = len(run.records())
            os.kill(run.proc.pid, signal.SIGSTOP)  # reads nothing until SIGCONT
            try:
                rk.restart_apiserver(0.2)  # its watch ends
                kubectl(rk, "delete", "ingress", "web", "-n", ns)  # type: ignore[arg-type]
                apply(rk, ingress("late", d, namespace=ns, port="http"))  # type: ignore[arg-type]
                compacted = rk.compact()  # past every revision the gateway has seen
            finally:
                os.kill(run.proc.pid, signal.SIGCONT)
            held = wait_table(cp, cid, {(c, "/"), (d, "/")}, timeout=60, namespace=ns)
            assert all(r["duplicates"] == 0 for r in held.values())
            assert held[(d, "/")]["service_port"] == 8080
            after = [str(r.get("msg")) for r in run.records()[frozen_at:]]
            assert "watching Ingress recovered" in after, after  # listed again
            assert compacted > 0 and run.proc.poll() is None, run.output()
        finally:
            run.stop()
            kubectl(rk, "delete", "namespace", ns, "--wait=false")  # type: ignore[arg-type]
