"""Registrar, tunnel and gateway never import pydantic (issue 15: ~10 MiB per container):
every module of agentkit and of the three services, imported in a fresh interpreter,
leaves no pydantic in ``sys.modules`` (their config, control-plane replies and command
payloads are msgspec records). The Kubernetes client (37.x) is built on pydantic, so a
process that calls the API loads it that way; importing ours never does.
``tests/gateway/test_acceptance.py`` checks the live tunnel after it served traffic."""

from __future__ import annotations

import json
import subprocess
import sys

WALK = """
import importlib, json, pkgutil, sys
for top in ("agentkit", "pipeops_registrar", "pipeops_tunnel", "pipeops_gateway"):
    package = importlib.import_module(top)
    for info in pkgutil.walk_packages(package.__path__, prefix=top + "."):
        importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""


def test_no_module_of_registrar_tunnel_gateway_or_agentkit_imports_pydantic() -> None:
    result = subprocess.run([sys.executable, "-c", WALK], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    modules = set(json.loads(result.stdout))
    assert {"pipeops_tunnel.sessions", "agentkit.controlplane", "msgspec"} <= modules
    assert "kubernetes.client.api_client" not in modules  # it would import pydantic
    assert not (found := {m for m in modules if m.split(".")[0] in ("pydantic", "pydantic_core")}
                ), sorted(found)[:5]
