"""The SSRF set against a real tunnel process: OPENs a hostile control plane sends to reach
what the agent can reach and the cluster did not publish. The cloud metadata address
(169.254.169.254), the pod's sibling ports on localhost (registrar, gateway and http-api
gRPC, the http-api, the metrics), ``kubernetes.default`` on a port other than the
forward's: each is refused with ``target not allowed`` and a ``not_allowed`` count, and
nothing is dialled (each would-be target is a real listener counting connections, or a
Service whose address is one). A Service whose address is the metadata address is refused
even when a route names it. The same session then opens an allowed Service and that
one is dialled: the listeners do see a dial when one is made. (A Service that no route
names is in test_agent_targets.py; raw ``{host, port}`` to an echo server in
test_agent_tunnel.py.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agentkit.mux import OpenFailed
from tests.tunnel.agent_helpers import (
    FakeControlPlane,
    FakeGateway,
    TcpServer,
    TunnelRun,
    echo,
    write_identity,
)

METADATA = "169.254.169.254"


def service(cluster_ip: str, ports: list[int]) -> dict[str, Any]:
    """A Service as the gateway's watch holds it (the gateway resolves what it allows)."""
    return {"apiVersion": "v1", "kind": "Service", "spec": {"clusterIP": cluster_ip, "ports": [
        {"name": f"p{port}", "port": port, "targetPort": port} for port in ports]}}


async def test_ssrf_opens_are_refused_and_nothing_is_dialled(state_dir: Path) -> None:
    # the siblings' ports: real listeners that count every connection
    siblings = {name: await TcpServer(echo).start()
                for name in ("registrar-grpc", "http-api-grpc", "http-api", "api-server-10250")}
    allowed = await TcpServer(echo).start()
    registrar, http_grpc, http_api, other_port = siblings.values()
    services = {
        # kubernetes.default: the API server's Service; a port of it a route never names
        ("default", "kubernetes"): service("127.0.0.1", [other_port.port]),
        # a Service that points at the metadata address
        ("apps", "metadata"): service(METADATA, [80]),
        ("apps", "web"): service("127.0.0.1", [allowed.port]),
    }
    gateway = await FakeGateway({("apps", "web", allowed.port)}, services).start()
    cp = await FakeControlPlane().start()
    run = TunnelRun(cp.url, state_dir, forwards={"kubernetes-api": "127.0.0.1:9"},
                    gateway_port=gateway.port,
                    extra=["--set", f"grpc.registrar={registrar.port}",
                           "--set", f"grpc.http_api={http_grpc.port}",
                           "--set", f"agent.port={http_api.port}"]).start()
    try:
        started = await run.started()
        write_identity(state_dir)
        session = await cp.wait_connected()
        own_grpc = int(str(started["grpc"]).rpartition(":")[2])
        own_metrics = int(str(started["metrics"]).rstrip("/").rpartition(":")[2]
                          .partition("/")[0])
        local_ports = [registrar.port, http_grpc.port, http_api.port, gateway.port,
                       own_grpc, own_metrics]
        hostile: list[dict[str, Any]] = [
            # the cloud metadata service, in every shape an OPEN can take
            {"host": METADATA, "port": 80},
            {"forward": f"{METADATA}:80"},
            {"forward": "kubernetes-api", "host": METADATA},
            {"service": METADATA, "namespace": "default", "port": 80},
            {"service": "metadata", "namespace": "apps", "port": 80},  # no route names it
            # the pod's siblings on localhost
            *({"host": "127.0.0.1", "port": port} for port in local_ports),
            *({"forward": f"127.0.0.1:{port}"} for port in local_ports),
            *({"forward": name} for name in ("registrar", "gateway", "http-api", "agent-http",
                                             "metrics", "localhost")),
            *({"service": "localhost", "namespace": "default", "port": port}
              for port in local_ports),
            # kubernetes.default on a port the forward does not name
            {"service": "kubernetes", "namespace": "default", "port": other_port.port},
            {"service": "kubernetes", "namespace": "default", "port": 443},
            {"forward": "kubernetes-api", "port": other_port.port},
            {"forward": "kubernetes.default.svc:10250"},
            {"host": "kubernetes.default", "port": other_port.port},
        ]
        for payload in hostile:
            with pytest.raises(OpenFailed) as info:
                await session.open_stream(payload, timeout=5)
            assert info.value.reason == "target not allowed", payload

        # what the gateway was asked: only well-formed Services, each refused by it
        asked = {("apps", "metadata", 80), ("default", "kubernetes", other_port.port),
                 ("default", "kubernetes", 443),
                 *(("default", "localhost", port) for port in local_ports)}
        assert set(gateway.calls) == asked
        metrics = await run.metrics()
        assert metrics["pipeops_tunnel_opens_refused_total{reason=not_allowed}"] == len(hostile)
        for reason in ("dial_failed", "dial_timeout", "resolve_failed"):
            assert metrics.get(f"pipeops_tunnel_opens_refused_total{{reason={reason}}}", 0) == 0
        assert {name: s.accepted for name, s in siblings.items()} == dict.fromkeys(siblings, 0)

        # a route that names the Service pointing at the metadata address: still refused
        gateway.allowed.add(("apps", "metadata", 80))
        with pytest.raises(OpenFailed) as info:
            await session.open_stream({"service": "metadata", "namespace": "apps",
                                       "port": 80}, timeout=5)
        assert "link-local" in info.value.reason
        metrics = await run.metrics()
        assert metrics["pipeops_tunnel_opens_refused_total{reason=not_allowed}"] == \
            len(hostile) + 1

        # the control: an allowed Service is dialled, and its listener sees it
        stream = await session.open_stream({"service": "web", "namespace": "apps",
                                            "port": allowed.port})
        await stream.send(b"allowed")
        stream.write_eof()
        assert await stream.read() == b"allowed"
        assert allowed.accepted == 1
        assert {name: s.accepted for name, s in siblings.items()} == dict.fromkeys(siblings, 0)
    finally:
        await asyncio.to_thread(run.stop)
        await cp.stop()
        await gateway.stop()
        for server in (*siblings.values(), allowed):
            await server.stop()
