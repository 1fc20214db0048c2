"""Registrar, tunnel and gateway never import pydantic (issue 15: ~10 MiB per container):
every module of agentkit and of the three services, imported in a fresh interpreter,
leaves no pydantic in ``sys.modules`` (their config, control-plane replies and command
payloads are msgspec records), nor after a Kubernetes call the way a pod makes it (the
in-cluster loader, a call and a watch through ``agentkit.kube.transport`` instead of the
client's ``ApiClient``, which in kubernetes 37.x imports pydantic; the kubeconfig loader
of ``make run`` and the tests imports the ``ApiClient`` itself).
``tests/gateway/test_acceptance.py`` checks the live tunnel after it served traffic."""

from __future__ import annotations

import json
import subprocess
import sys

WALK = """
import asyncio, importlib, json, pkgutil, sys
for top in ("agentkit", "pipeops_registrar", "pipeops_tunnel", "pipeops_gateway"):
    package = importlib.import_module(top)
    for info in pkgutil.walk_packages(package.__path__, prefix=top + "."):
        importlib.import_module(info.name)
import kubernetes.config.incluster_config  # the pod's loader
from kubernetes.client import Configuration
from agentkit.kube import Kube, KubeError
from agentkit.kube import resources as r
from agentkit.kube.transport import Transport
from agentkit.kube.watch import watch
async def first(events):
    async for event in events:
        return event
async def call():
    kube = Kube(Transport(Configuration(host="http://127.0.0.1:9")))
    statuses = []
    for attempt in (kube.version(), first(watch(kube, r.CONFIGMAPS, "d", resource_version=""))):
        try:
            await attempt
        except KubeError as exc:
            statuses.append(exc.status)
    return statuses
print(json.dumps({"status": asyncio.run(call()), "modules": sorted(sys.modules)}))
"""


def test_no_module_of_registrar_tunnel_gateway_or_agentkit_imports_pydantic() -> None:
    result = subprocess.run([sys.executable, "-c", WALK], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == [0, 0]  # a call and a watch were made: nobody listens there
    modules = set(report["modules"])
    assert "urllib3" in modules
    assert {"pipeops_tunnel.sessions", "agentkit.controlplane", "msgspec"} <= modules
    assert "kubernetes.client.api_client" not in modules  # it would import pydantic
    assert not (found := {m for m in modules if m.split(".")[0] in ("pydantic", "pydantic_core")}
                ), sorted(found)[:5]
