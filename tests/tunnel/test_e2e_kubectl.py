"""End to end: the real ``kubectl`` reaches the cluster through the tunnel, in both worlds
(kubesim and the real control plane; the ``e2e`` fixture is parametrised over them).

Real processes: the API server (HTTPS, its own CA), the dev control plane,
``pipeops-registrar`` (registers, writes the identity) and ``pipeops-tunnel`` (polls the
allocation, connects, dials the API server for the ``kubernetes-api`` forward). kubectl's
kubeconfig points at the control plane's allocated ``kubernetes-api`` port on 127.0.0.1
with the cluster's CA and ``tls-server-name`` a name in its certificate (kubesim.local;
kubernetes): TLS runs end to end through the stream (passthrough), so a wrong server name
fails certificate verification.

How a watch is shown to outlive every timeout, in test-controlled time: the test sets
every timeout on a stream's path (both ends' WebSocket ping interval and pong timeout;
the agent has no stream idle timeout, on purpose; see ``E2E_TIMEOUTS``) to at most
``LONGEST_TIMEOUT`` = 2 s. kubectl sets none (``--request-timeout`` 0), kubesim ends a
watch only at a ``timeoutSeconds`` kubectl does not send (the real API server at a random
30 to 60 minutes), and the control plane's
listeners have no idle timeout at all. The watch is then held for more than six times
the longest timeout, which is the ratio of two minutes to the production pong timeout
(20 s), and through idle gaps each longer than the longest timeout, events arriving
after each gap. A watch cut by any of them would end kubectl (``get -w`` does not retry),
so the process still running and still printing events is the proof.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import Lines
from tests.tunnel.e2e_helpers import LONGEST_TIMEOUT, E2EStack


def _run(e2e: E2EStack, *args: str, kubeconfig: Path | None = None,
         stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(e2e.kubectl(*args, kubeconfig=kubeconfig), input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)


def test_kubectl_get_goes_through_the_tunnel(e2e: E2EStack) -> None:
    before = e2e.view()["stats_total"]["streams_opened"]
    result = _run(e2e, "get", "pods", "-A", "-o", "name")
    assert result.returncode == 0, result.stderr
    assert f"pod/{e2e.world.demo_pods()[0]}" in result.stdout.split()
    direct = e2e.world.request("GET", "/api/v1/pods")[1]
    assert len(result.stdout.split()) == len(direct["items"])
    assert e2e.view()["stats_total"]["streams_opened"] > before  # it used the tunnel
    forward = next(f for f in e2e.view()["forwards"] if f["name"] == "kubernetes-api")
    assert forward["connections_total"] >= 1


def test_tls_is_end_to_end_so_the_server_name_matters(e2e: E2EStack) -> None:
    config = yaml.safe_load(e2e.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["tls-server-name"] = "not-in-the-certificate.test"
    wrong = e2e.folder / "wrong-name.kubeconfig"
    wrong.write_text(yaml.safe_dump(config))
    result = _run(e2e, "get", "namespaces", kubeconfig=wrong)
    assert result.returncode != 0
    assert "certificate" in result.stderr and "not-in-the-certificate.test" in result.stderr


def test_kubectl_apply_creates_and_updates(e2e: E2EStack) -> None:
    manifest = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "applied", "namespace": e2e.namespace},
                "data": {"greeting": "hello"}}
    result = _run(e2e, "apply", "-f", "-", stdin=yaml.safe_dump(manifest))
    assert result.returncode == 0, result.stderr
    assert "configmap/applied created" in result.stdout
    manifest["data"] = {"greeting": "hello again"}
    result = _run(e2e, "apply", "-f", "-", stdin=yaml.safe_dump(manifest))
    assert result.returncode == 0, result.stderr
    assert "configmap/applied configured" in result.stdout
    status, stored = e2e.world.request(
        "GET", f"/api/v1/namespaces/{e2e.namespace}/configmaps/applied")
    assert status == 200 and stored["data"] == {"greeting": "hello again"}


def test_kubectl_logs_follow_streams_new_lines(e2e: E2EStack) -> None:
    pod = e2e.world.demo_pods()[0]
    follow = Lines(e2e.kubectl("logs", "-f", "-n", "demo", pod))
    first, second = (f"e2e {n} line {e2e.cluster_id}" for n in ("first", "second"))
    try:
        e2e.world.append_log("demo", pod, [first])
        follow.wait_line(first)
        e2e.world.append_log("demo", pod, [second])
        follow.wait_line(second)
        assert follow.proc.poll() is None  # still following
    finally:
        follow.stop()


def test_a_watch_keeps_streaming_past_every_timeout(e2e: E2EStack) -> None:
    namespace = e2e.namespace
    connects = e2e.view()["connects"]
    watch = Lines(e2e.kubectl("get", "configmaps", "-n", namespace, "-w", "-o", "name",
                              "-l", "watch=e2e"))
    started = time.monotonic()
    try:
        rounds = 4
        for i in range(rounds):
            status, body = e2e.world.request(
                "POST", f"/api/v1/namespaces/{namespace}/configmaps",
                {"metadata": {"name": f"watched-{i}", "labels": {"watch": "e2e"}}})
            assert status == 201, body
            watch.wait_line(f"configmap/watched-{i}")
            if i < rounds - 1:
                # an idle gap longer than every timeout on the path: the watch must not end
                with pytest.raises(subprocess.TimeoutExpired):
                    watch.proc.wait(timeout=1.5 * LONGEST_TIMEOUT)
        held = time.monotonic() - started
        assert held > 4 * LONGEST_TIMEOUT
        assert watch.proc.poll() is None, watch.errors
        assert e2e.view()["connects"] == connects  # one tunnel connection all along
    finally:
        watch.stop()
