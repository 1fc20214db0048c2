"""The registrar as a real process, wired to a real dev control plane and kubesim.

``RegistrarRun`` builds the command line (temp state dir, kubeconfig, the kubesim token
as the ServiceAccount token, gRPC and metrics on free ports, siblings pointed at ports
where nothing listens, short intervals) and offers what the tests read: the identity
file, the metrics, the gRPC address, and every log line for the secret check.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from kubesim.testing import Kubesim
from pipeops.agent.v1 import registrar_pb2, registrar_pb2_grpc, service_pb2, service_pb2_grpc
from pipeops_controlplane.testing import ControlPlane
from tests.clusters import Cluster
from tests.helpers import BIN, ServiceProcess, free_port, wait_for

Server = Cluster | Kubesim  # the world a test runs in, or a module's own kubesim
INTERVAL = 0.5  # heartbeat interval in these tests


class RegistrarRun(ServiceProcess):
    def __init__(self, controlplane: ControlPlane, kubeconfig: str, sa_token_file: Path,
                 state_dir: Path, namespace: str, *, install_token: str | None = None,
                 extra: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.controlplane = controlplane
        argv = [
            str(BIN / "pipeops-registrar"),
            "--api-url", controlplane.url,
            "--state-dir", str(state_dir),
            "--kubeconfig", kubeconfig,
            "--grpc-port", "0",
            "--namespace", namespace,
            "--set", "kubernetes.in_cluster=false",
            "--set", f"kubernetes.service_account_token_path={sa_token_file}",
            "--set", "metrics.registrar=0",
            "--set", f"pipeops.heartbeat_interval={INTERVAL}",
            "--set", "pipeops.timeout=3",  # a loaded machine: no spurious slow-beat warning
            "--set", "pipeops.reconnect.backoff_base=0.1",
            "--set", "pipeops.reconnect.backoff_max=0.5",
            # siblings: ports where nothing listens, so another test's tunnel never answers
            "--set", f"grpc.tunnel={free_port()}",
            "--set", f"grpc.gateway={free_port()}",
            *(extra or []),
        ]
        token = controlplane.token if install_token is None else install_token
        super().__init__(argv, env={"PIPEOPS_TOKEN": token, **(env or {})})

    # -- what it says ------------------------------------------------------------------

    def identity_file(self) -> dict[str, Any] | None:
        try:
            document = json.loads((self.state_dir / "identity.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        data: dict[str, Any] = document["data"]
        return data

    def wait_registered(self, timeout: float = 20.0) -> dict[str, Any]:
        def registered() -> dict[str, Any] | None:
            data = self.identity_file()
            return data if data and data.get("state") == "registered" else None

        self.wait_record(lambda r: r.get("msg") == "registered with the control plane",
                         timeout, "registration")
        return wait_for(registered, timeout, what="the identity file to say registered")

    @property
    def metrics_url(self) -> str:
        return str(self.wait_started()["metrics"])

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
            text = resp.read().decode()
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for (sample, sample_labels), value in self.metrics().items():
            if sample == name and set(labels.items()) <= set(sample_labels):
                total += value
        return total

    def describe(self) -> service_pb2.ServiceInfo:
        """``Service.Describe`` over gRPC: the state the http-api reports as readiness."""
        with grpc.insecure_channel(self.grpc_address) as channel:
            info: service_pb2.ServiceInfo = service_pb2_grpc.ServiceStub(channel).Describe(
                service_pb2.DescribeRequest(), timeout=5)
        return info

    def heartbeat_state(self) -> registrar_pb2.Heartbeat:
        with grpc.insecure_channel(self.grpc_address) as channel:
            beat: registrar_pb2.Heartbeat = registrar_pb2_grpc.RegistrarStub(
                channel).GetHeartbeat(registrar_pb2.GetHeartbeatRequest(), timeout=5)
        return beat

    def wait_exit(self, timeout: float = 15.0) -> int:
        """Wait for the process to end by itself; its exit code."""
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self._join()
        return code

    def warnings(self, predicate: Callable[[dict[str, Any]], bool] = lambda r: True
                 ) -> list[dict[str, Any]]:
        return [r for r in self.records()
                if r.get("level") in ("warning", "error") and predicate(r)]

    def all_output(self) -> str:
        return "\n".join(self.lines + self.stderr_lines)

    def assert_no_secrets(self, *secrets: str) -> None:
        output = self.all_output()
        for secret in secrets:
            assert secret, "an empty secret proves nothing"
            assert secret not in output, "a secret appeared in the registrar's output"


def sa_token_file(folder: Path, token: str) -> Path:
    path = folder / "sa-token"
    path.write_text(token + "\n")
    os.chmod(path, 0o600)
    return path


def cluster_with_beats(cp: ControlPlane, cluster_id: str, count: int, timeout: float = 15.0
                       ) -> dict[str, Any]:
    """The control plane's view of the cluster once it counted ``count`` heartbeats."""
    def enough() -> dict[str, Any] | None:
        view = cp.cluster(cluster_id)
        return view if view is not None and view["heartbeat_count"] >= count else None

    return wait_for(enough, timeout, what=f"{count} heartbeats of {cluster_id}")


def beats(cp: ControlPlane, cluster_id: str) -> int:
    view = cp.cluster(cluster_id)
    return int(view["heartbeat_count"]) if view else 0


def stored_in_cluster(ks: Server, namespace: str) -> tuple[dict[str, str], dict[str, str]]:
    """(decoded state Secret, identity ConfigMap data); empty dicts for a missing object."""
    found: list[dict[str, str]] = []
    for kind, name in (("secrets", "pipeops-agent-state"),
                       ("configmaps", "pipeops-agent-identity")):
        status, body = ks.request("GET", f"/api/v1/namespaces/{namespace}/{kind}/{name}")
        data: dict[str, str] = (body.get("data") or {}) if status == 200 else {}
        if kind == "secrets":
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
        found.append(data)
    return found[0], found[1]


def wait_stored(ks: Server, namespace: str, identity: dict[str, Any], timeout: float = 15.0
                ) -> tuple[dict[str, str], dict[str, str]]:
    """The Secret and ConfigMap once both name ``identity``'s cluster.

    They exist (with no cluster id) before registration and are written after the file:
    the file saying "registered" does not mean they do yet.
    """
    def named() -> tuple[dict[str, str], dict[str, str]] | None:
        secret, configmap = stored_in_cluster(ks, namespace)
        wanted = identity["cluster_id"]
        return ((secret, configmap) if secret.get("cluster_id") == wanted
                and configmap.get("cluster_id") == wanted else None)

    result: tuple[dict[str, str], dict[str, str]] = wait_for(
        named, timeout, what="the Secret and ConfigMap to name the cluster")
    return result


def registered_and_stopped(run: RegistrarRun, ks: Server, namespace: str) -> dict[str, Any]:
    """``run``'s identity once registered and stored in the cluster; ``run`` then stopped
    (exit 0): the state a next pod or container starts from."""
    identity = run.wait_registered()
    wait_stored(ks, namespace, identity)
    assert run.terminate() == 0
    return identity
