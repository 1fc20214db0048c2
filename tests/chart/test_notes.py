"""NOTES.txt: how to reach the HTTP API, the grpcurl and `kubectl logs -c` commands."""

from __future__ import annotations

import re

from tests.chart.chart import AGENT_CONTAINERS, TOKEN, Chart


def test_notes_tell_how_to_reach_everything(chart: Chart) -> None:
    notes = chart.notes("--set", f"pipeops.token={TOKEN}")
    rendered = chart.template("--set", f"pipeops.token={TOKEN}")
    deploy = f"deploy/{rendered.deployment['metadata']['name']}"
    ns = "-n pipeops-system"

    assert f"kubectl {ns} port-forward {deploy} 8080:8080" in notes
    assert "curl -s http://127.0.0.1:8080/ready" in notes
    assert "http://127.0.0.1:8080/dashboard" in notes
    secret = next(o for o in rendered.objects if o["kind"] == "Secret"
                  and o["metadata"]["name"].endswith("-dashboard"))
    assert (f"kubectl {ns} get secret {secret['metadata']['name']} -o jsonpath='{{.data.token}}'"
            " | base64 -d") in notes
    # One `kubectl logs -c` per container, each naming a container the pod really has.
    names = re.findall(rf"kubectl {ns} logs {re.escape(deploy)} -c ([a-z-]+)", notes)
    assert sorted(names) == sorted(AGENT_CONTAINERS)
    assert sorted(c["name"] for c in rendered.all_containers()) == sorted(names)
    # grpcurl against every gRPC port, after one port-forward that covers them all.
    grpc_ports = [str(rendered.port(c, f"grpc-{c}")) for c in AGENT_CONTAINERS]
    assert f"kubectl {ns} port-forward {deploy} {' '.join(grpc_ports)}" in notes
    for port in grpc_ports:
        assert f"grpcurl -plaintext 127.0.0.1:{port} list" in notes
    assert "grpc.health.v1.Health/Check" in notes
    assert "WARNING" not in notes
    assert TOKEN not in notes
    assert 'with access "view"' in notes


def test_notes_follow_the_values(chart: Chart) -> None:
    notes = chart.notes("--set", "registrar.grpcPort=6001", "--set", "httpApi.port=9000",
                        "--set", "features.nativeSidecar=false",
                        "--set", "features.controlPlaneAccess=edit")
    assert "grpcurl -plaintext 127.0.0.1:6001 list" in notes
    assert "port-forward deploy/pa-pipeops-agent 9000:9000" in notes
    assert "curl -s http://127.0.0.1:9000/ready" in notes
    assert "native sidecar" not in notes
    assert 'with access "edit"' in notes
    # No token given: the notes say how to create the Secret the pod waits for.
    assert "WARNING: no install token was given" in notes
    assert "create secret generic pa-pipeops-agent-token" in notes
