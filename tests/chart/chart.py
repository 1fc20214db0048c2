"""Render the chart with the real `helm` and look at what came out.

`Chart` runs helm with private HELM_*_HOME folders and no kubeconfig, so nothing on the
developer's machine leaks in. `Rendered` wraps one `helm template` output: the objects,
the Deployment's pod spec, every container (init containers included) and the config file
the ConfigMap carries.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import ROOT, tool

CHART_DIR = ROOT / "charts" / "pipeops-agent"
VALUES_DIR = Path(__file__).resolve().parent / "values"
RELEASE = "pa"
NAMESPACE = "pipeops-system"
# An install token no other string in the chart could contain by accident.
TOKEN = "install-token-5d1c0e7b9a"

# The values sets every check runs against: the defaults (with a token, as one installs
# it), and every feature on, in both gateway ownership modes.
VALUE_SETS: dict[str, list[str]] = {
    "defaults": ["--set", f"pipeops.token={TOKEN}"],
    "all-features": ["-f", str(VALUES_DIR / "all-features.yaml")],
    "all-features-chart-gateway": ["-f", str(VALUES_DIR / "all-features-chart-gateway.yaml")],
}

AGENT_CONTAINERS = ("registrar", "tunnel", "gateway", "http-api")


class HelmError(AssertionError):
    pass


@dataclass
class Chart:
    """The real helm binary, isolated from the user's helm and kube config."""

    home: Path
    helm: str = field(default_factory=lambda: tool("helm"))

    def env(self, kubeconfig: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBE"))}
        env.update(
            HELM_CACHE_HOME=str(self.home / "cache"),
            HELM_CONFIG_HOME=str(self.home / "config"),
            HELM_DATA_HOME=str(self.home / "data"),
            KUBECONFIG=kubeconfig or str(self.home / "no-kubeconfig"),
        )
        return env

    def run(self, *args: str, kubeconfig: str | None = None, check: bool = True,
            timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.helm, *args], capture_output=True, text=True,
                              env=self.env(kubeconfig), timeout=timeout, cwd=ROOT)
        if check and proc.returncode != 0:
            raise HelmError(f"helm {' '.join(args)} exited {proc.returncode}:\n"
                            f"{proc.stdout}\n{proc.stderr}")
        return proc

    def template(self, *values_args: str, namespace: str = NAMESPACE,
                 release: str = RELEASE) -> Rendered:
        proc = self.run("template", release, str(CHART_DIR), "--namespace", namespace,
                        *values_args)
        return Rendered.parse(proc.stdout, namespace)

    def notes(self, *values_args: str, namespace: str = NAMESPACE) -> str:
        """NOTES.txt as `helm install` prints it (client-side dry run, no cluster)."""
        proc = self.run("install", RELEASE, str(CHART_DIR), "--namespace", namespace,
                        "--dry-run=client", *values_args)
        _, sep, notes = proc.stdout.partition("NOTES:\n")
        assert sep, f"helm install --dry-run printed no NOTES:\n{proc.stdout}"
        return notes


@dataclass
class Rendered:
    text: str
    namespace: str
    objects: list[dict[str, Any]]

    @classmethod
    def parse(cls, text: str, namespace: str) -> Rendered:
        objects = [doc for doc in yaml.safe_load_all(text) if doc]
        return cls(text, namespace, objects)

    # ---- finding objects ------------------------------------------------------------------

    def of_kind(self, kind: str, api_version: str | None = None) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind
                and (api_version is None or o["apiVersion"] == api_version)]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.deployment["spec"]["template"]["spec"]
        return spec

    def all_containers(self) -> Iterator[dict[str, Any]]:
        """Every container of every pod template, init containers included."""
        for obj in self.objects:
            spec = pod_spec_of(obj)
            if spec is not None:
                yield from spec.get("initContainers", [])
                yield from spec.get("containers", [])

    def container(self, name: str) -> dict[str, Any]:
        found = [c for c in self.all_containers() if c["name"] == name]
        assert len(found) == 1, f"expected one container {name}, found {len(found)}"
        return found[0]

    def port(self, container: str, port_name: str) -> int:
        for port in self.container(container).get("ports", []):
            if port["name"] == port_name:
                return int(port["containerPort"])
        raise AssertionError(f"container {container} has no port {port_name}")

    @property
    def service_account(self) -> str:
        return str(self.pod_spec["serviceAccountName"])

    @property
    def config_map(self) -> dict[str, Any]:
        volume = next(v for v in self.pod_spec["volumes"] if v["name"] == "config")
        return self.one("ConfigMap", volume["configMap"]["name"])

    @property
    def config_text(self) -> str:
        return str(self.config_map["data"]["config.yaml"])


def pod_spec_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a workload (Pod, Deployment, ...), else None."""
    if obj["kind"] == "Pod":
        spec: dict[str, Any] = obj["spec"]
        return spec
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        inner: dict[str, Any] = obj["spec"]["template"]["spec"]
        return inner
    return None


def subjects_match(binding: dict[str, Any], sa: str, namespace: str) -> bool:
    return any(s["kind"] == "ServiceAccount" and s["name"] == sa
               and s.get("namespace") == namespace for s in binding.get("subjects", []))


def agent_rules(rendered: Rendered, kind: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(role, binding) pairs of `kind` (ClusterRole or Role) bound to the agent's SA."""
    binding_kind = "ClusterRoleBinding" if kind == "ClusterRole" else "RoleBinding"
    pairs = []
    for binding in rendered.of_kind(binding_kind):
        if not subjects_match(binding, rendered.service_account, NAMESPACE):
            continue
        ref = binding["roleRef"]
        assert ref["kind"] == kind, f"{binding['metadata']['name']} binds a {ref['kind']}"
        ns = binding["metadata"].get("namespace")
        roles = [r for r in rendered.of_kind(kind) if r["metadata"]["name"] == ref["name"]
                 and r["metadata"].get("namespace") == ns]
        assert len(roles) == 1, f"{binding_kind} {ref['name']}: the chart renders its {kind}"
        pairs.append((roles[0], binding))
    return pairs

