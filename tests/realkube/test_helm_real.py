"""helm install, upgrade and uninstall of the chart on the real API server: its admission,
validation and defaulting accept every object the chart renders, an upgrade that changes
the control plane's access replaces the binding (roleRef is immutable there), and an
uninstall leaves only the session namespace the chart keeps."""

from __future__ import annotations

import json
from pathlib import Path

from realkube.testing import RealKube
from tests.chart.chart import NAMESPACE, RELEASE, TOKEN, Chart
from tests.chart.test_install import BUILTIN, install, key, kubectl, stored

VALUES = ["--set", f"pipeops.token={TOKEN}"]


def test_install_upgrade_and_uninstall_on_the_real_api_server(
        real_kube: RealKube, tmp_path: Path) -> None:
    chart = Chart(tmp_path / "helm")
    out = install(chart, real_kube, *VALUES)
    assert "STATUS: deployed" in out
    rendered = chart.template(*VALUES)
    objects = stored(real_kube)
    expected = {key(o) for o in rendered.objects if o["kind"] in BUILTIN}
    assert expected <= set(objects), f"missing: {expected - set(objects)}"
    deployment = objects[key(rendered.deployment)]
    # defaulted by the real server, the containers are the chart's
    assert [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]] == [
        c["name"] for c in rendered.pod_spec["containers"]]
    assert objects[key(rendered.config_map)]["data"] == rendered.config_map["data"]
    status = json.loads(chart.run("status", RELEASE, "-n", NAMESPACE, "-o", "json",
                                  kubeconfig=real_kube.kubeconfig).stdout)
    assert (status["info"]["status"], status["version"]) == ("deployed", 1)
    releases = kubectl(real_kube, "get", "secrets", "-n", NAMESPACE,
                       "-l", "owner=helm")
    assert [s["metadata"]["name"] for s in releases["items"]] == ["sh.helm.release.v1.pa.v1"]

    out = install(chart, real_kube, *VALUES,
                  "--set", "features.controlPlaneAccess=edit", action="upgrade")
    assert "STATUS: deployed" in out
    bindings = {k[2]: o["roleRef"]["name"] for k, o in stored(real_kube).items()
                if k[0] == "ClusterRoleBinding"}
    assert bindings == {"pa-pipeops-agent": "pa-pipeops-agent",
                        "pa-pipeops-agent-control-plane-edit": "edit"}

    chart.run("uninstall", RELEASE, "-n", NAMESPACE, "--wait",
              kubeconfig=real_kube.kubeconfig)
    assert set(stored(real_kube)) == {("Namespace", "", "pipeops-sessions")}
    # the agent's pod (bound to a kwok node) goes too: the shared cluster is left as found
    real_kube.wait_for(lambda: real_kube.request(
        "GET", f"/api/v1/pods?labelSelector=app.kubernetes.io%2Finstance%3D{RELEASE}"
    )[1]["items"] == [], timeout=60)
