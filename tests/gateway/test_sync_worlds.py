"""Route sync in both worlds (tests/clusters.py): kubesim and the real API server (no
Gateway API CRDs there, which is not an error). Ingresses made with kubectl; the dev
control plane's table is the judge; the API server restarted on the way."""

from __future__ import annotations

import uuid
from pathlib import Path

from pipeops_controlplane.testing import ControlPlane
from tests.clusters import Cluster
from tests.gateway.harness import (
    GatewayRun,
    apply,
    ingress,
    kubectl,
    namespace,
    wait_table,
    write_identity,
)
from tests.helpers import wait_for
from tests.tunnel.e2e_helpers import register


def test_route_sync_create_edit_delete_and_an_api_restart(
        cluster: Cluster, controlplane: ControlPlane, tmp_path: Path) -> None:
    ns = f"gw-{cluster.world}-{uuid.uuid4().hex[:6]}"
    namespace(cluster, ns)  # type: ignore[arg-type]
    a, b, c = (f"{x}.{ns}.example.test" for x in "abc")
    apply(cluster, {"apiVersion": "v1", "kind": "Service",  # type: ignore[arg-type]
                    "metadata": {"name": "web", "namespace": ns},
                    "spec": {"ports": [{"name": "http", "port": 8080}]}},
          ingress("web", a, b, namespace=ns, port="http"))
    reg = register(controlplane)
    state = tmp_path / "state"
    state.mkdir()
    write_identity(state, reg)
    run = GatewayRun(controlplane, cluster.kubeconfig, state).start()
    cid = reg["cluster_id"]
    try:
        held = wait_table(controlplane, cid, {(a, "/"), (b, "/")}, timeout=30, namespace=ns)
        assert held[(a, "/")]["service_port"] == 8080  # the named port, resolved
        apply(cluster, ingress("web", a, namespace=ns, port="http"))  # type: ignore[arg-type]
        wait_table(controlplane, cid, {(a, "/")}, timeout=30, namespace=ns)
        cluster.restart()
        wait_for(lambda: cluster.request("GET", f"/api/v1/namespaces/{ns}")[0] == 200, 30,
                 what="the API server back")
        apply(cluster, ingress("other", c, namespace=ns))  # type: ignore[arg-type]
        kubectl(cluster, "delete", "ingress", "web", "-n", ns)  # type: ignore[arg-type]
        held = wait_table(controlplane, cid, {(c, "/")}, timeout=30, namespace=ns)
        assert all(r["duplicates"] == 0 for r in held.values())
        if cluster.real:  # no Gateway API CRDs: said once, not an error
            assert any("HTTPRoutes are not synced" in line for line in run.lines)
    finally:
        run.stop()
        kubectl(cluster, "delete", "namespace", ns, "--wait=false")  # type: ignore[arg-type]
