"""The production path: the tunnel over ``wss://``. The dev control plane serves its tunnel
endpoint with a throwaway CA (``--tunnel-tls-dir``); the real tunnel service trusts it
through ``pipeops.tls.ca_file`` and carries streams through it, every byte intact at the
flow-control and frame limits; without the CA it refuses the endpoint and says why."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentkit.mux import DEFAULT_MAX_FRAME
from pipeops_controlplane.testing import ControlPlane
from tests.tunnel.agent_helpers import TcpServer, TunnelRun, eventually, write_identity
from tests.tunnel.conftest import CP_ARGS
from tests.tunnel.e2e_helpers import register

WINDOW = 256 * 1024  # the tunnel's default per-stream credit (tunnel.window)


@pytest.fixture(scope="module")
def tls_controlplane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    folder = tmp_path_factory.mktemp("cp-tls")
    with ControlPlane(extra_args=[*CP_ARGS, "--tunnel-tls-dir", str(folder)]) as cp:
        yield cp


async def debug(cp: ControlPlane, cluster_id: str) -> dict[str, Any]:
    status, body = await asyncio.to_thread(cp.request, "GET", f"/debug/tunnels/{cluster_id}")
    return body if status == 200 else {}


async def connected(cp: ControlPlane, cluster_id: str) -> dict[str, Any]:
    return await eventually(lambda: debug(cp, cluster_id), lambda v: bool(v.get("connected")),
                            timeout=20, what="the tunnel connected over wss://")


async def round_trip(port: int, data: bytes) -> bytes:
    """Send ``data`` through the forward (to the echo), half-close, read all back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        view = memoryview(data)
        for at in range(0, len(data), 100_000):  # several writes, not frame-aligned
            writer.write(view[at:at + 100_000])
            await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    got = await reader.read()
    await sender
    writer.close()
    await writer.wait_closed()
    return got


def test_the_endpoint_serves_wss_with_its_own_ca(tls_controlplane: ControlPlane) -> None:
    assert tls_controlplane.tunnel_url.startswith("wss://127.0.0.1:")
    folder = Path(tls_controlplane.tunnel_ca_file).parent
    assert Path(tls_controlplane.tunnel_ca_file).read_text().startswith(
        "-----BEGIN CERTIFICATE-----")
    assert stat.S_IMODE((folder / "server.key").stat().st_mode) == 0o600
    # registration hands the wss:// URL out
    reg = register(tls_controlplane)
    assert reg["tunnel_url"] == tls_controlplane.tunnel_url


async def test_streams_cross_the_tls_tunnel_intact_at_the_limits(
    tls_controlplane: ControlPlane, echo_server: TcpServer, state_dir: Path
) -> None:
    reg = await asyncio.to_thread(register, tls_controlplane)
    write_identity(state_dir, agent_id=reg["agent_id"], cluster_id=reg["cluster_id"],
                   cluster_token=reg["token"])
    run = TunnelRun(tls_controlplane.url, state_dir, forwards={"agent-http": echo_server.addr},
                    extra=["--set", f"pipeops.tls.ca_file={tls_controlplane.tunnel_ca_file}"]
                    ).start()
    try:
        view = await connected(tls_controlplane, reg["cluster_id"])
        port = next(f["remote_port"] for f in view["forwards"] if f["name"] == "agent-http")
        # sizes on each side of a frame and of the window, and many windows' worth, all at
        # once on one connection
        sizes = [1, DEFAULT_MAX_FRAME - 1, DEFAULT_MAX_FRAME, DEFAULT_MAX_FRAME + 1,
                 WINDOW - 1, WINDOW, WINDOW + 1, 3 * WINDOW + 7, 8 * 1024 * 1024]
        payloads = [os.urandom(size) for size in sizes]
        replies = await asyncio.gather(*(round_trip(port, p) for p in payloads))
        for size, sent, got in zip(sizes, payloads, replies, strict=True):
            assert len(got) == size, (size, len(got))
            assert hashlib.sha256(got).digest() == hashlib.sha256(sent).digest(), size
        # many streams at once, each a little over a window
        many = [os.urandom(WINDOW + 1000 + i) for i in range(40)]
        replies = await asyncio.gather(*(round_trip(port, p) for p in many))
        assert [hashlib.sha256(r).digest() for r in replies] \
            == [hashlib.sha256(p).digest() for p in many]
        status = await run.grpc("pipeops.agent.v1.Tunnel/GetStatus")
        assert status["tunnel_url"].startswith("wss://")
        assert status["state"] == "TUNNEL_STATE_CONNECTED"
        assert int(status["bytes_in"]) >= sum(sizes) + sum(map(len, many))
    finally:
        await asyncio.to_thread(run.stop)


async def test_without_the_ca_the_agent_refuses_the_endpoint_and_says_why(
    tls_controlplane: ControlPlane, echo_server: TcpServer, state_dir: Path
) -> None:
    reg = await asyncio.to_thread(register, tls_controlplane)
    write_identity(state_dir, agent_id=reg["agent_id"], cluster_id=reg["cluster_id"],
                   cluster_token=reg["token"])
    run = TunnelRun(tls_controlplane.url, state_dir,
                    forwards={"agent-http": echo_server.addr}).start()
    try:
        status = await eventually(lambda: run.grpc("pipeops.agent.v1.Tunnel/GetStatus"),
                                  lambda s: "CERTIFICATE_VERIFY_FAILED" in s.get("last_error", ""),
                                  timeout=20, what="the certificate refused")
        assert status["state"] != "TUNNEL_STATE_CONNECTED"
        assert not (await debug(tls_controlplane, reg["cluster_id"])).get("connected")
    finally:
        await asyncio.to_thread(run.stop)
