"""The websockets fast path: pinned to the versions it was written against, active on the
locked one, and never needed: with it unavailable (switched off, another websockets
version, internals missing) the multiplexer keeps to ``send()``/``recv()`` and behaves
the same."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import os
import tomllib
from typing import Any

import pytest

from agentkit.mux import Multiplexer, OpenRequest, Role, StreamReset, fastpath, pipe
from tests.helpers import ROOT
from tests.mux.conftest import TcpServer, WsPair
from tests.mux.helpers import wait_for

MiB = 1024 * 1024


def test_the_dependency_pins_the_fast_paths_range() -> None:
    project = tomllib.loads((ROOT / "libs/agentkit/pyproject.toml").read_text())
    pins = [d for d in project["project"]["dependencies"] if d.startswith("websockets")]
    assert pins == ["websockets" + ",".join(fastpath.SUPPORTED)]
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = [p["version"] for p in lock["package"] if p["name"] == "websockets"]
    assert locked == [importlib.metadata.version("websockets")]
    assert fastpath.supported_version(locked[0])


def test_version_range_check() -> None:
    low, high = fastpath.SUPPORTED[0][2:], fastpath.SUPPORTED[1][1:]
    assert fastpath.supported_version(low)
    assert fastpath.supported_version(low + ".9")
    assert not fastpath.supported_version(high)
    assert not fastpath.supported_version("14.2")
    assert not fastpath.supported_version("99.0")


async def run_traffic(ws_pair: WsPair, echo: TcpServer, sink: TcpServer,
                      **options: Any) -> tuple[Multiplexer, Multiplexer]:
    """Echo both ways, a sink with half-close, control messages, flush and a reset, over
    the real websockets pair; returns the two multiplexers (closed)."""
    targets = {"echo": (echo.host, echo.port), "sink": (sink.host, sink.port)}
    seen: list[dict[str, Any]] = []
    outcomes: list[BaseException | None] = []

    async def dial(request: OpenRequest) -> None:
        target = targets.get(str(request.payload.get("forward")))
        if target is None:
            request.refuse("target not allowed")
            return
        reader, writer = await asyncio.open_connection(*target)
        stream = request.accept()
        try:
            await pipe(stream, reader, writer)
            outcomes.append(None)
        except (StreamReset, OSError) as exc:
            outcomes.append(exc)

    cp = Multiplexer(ws_pair.server, Role.CONTROL_PLANE, on_open=dial, name="cp", **options)
    agent = Multiplexer(ws_pair.client, Role.AGENT, on_open=dial, on_control=seen.append,
                        name="agent", **options)
    async with cp, agent:
        payload = os.urandom(4 * MiB)

        async def echo_through(mux: Multiplexer, data: bytes) -> bytes:
            stream = await mux.open_stream({"forward": "echo"})
            producer = asyncio.create_task(stream.send(data))
            await producer
            stream.write_eof()
            return await stream.read(-1)

        down, up = await asyncio.gather(echo_through(cp, payload), echo_through(agent, payload))
        assert down == payload and up == payload

        stream = await cp.open_stream({"forward": "sink"})
        await stream.send(payload)
        stream.write_eof()
        answer = await asyncio.wait_for(stream.read(-1), 20)
        assert answer.decode() == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}"

        for i in range(200):
            cp.send_control({"type": "note", "n": i})
        await asyncio.wait_for(cp.flush(), 10)
        assert cp.queued_control == 0 and not cp.connection.has_output
        await wait_for(lambda: len(seen) == 200)
        assert [m["n"] for m in seen] == list(range(200))

        held = await agent.open_stream({"forward": "echo"})
        held.reset("enough")
        with pytest.raises(StreamReset):
            await held.read(1)
        await wait_for(lambda: len(outcomes) == 4)
        assert outcomes[:3] == [None, None, None] and isinstance(outcomes[3], StreamReset)
    for mux in (cp, agent):
        assert mux.stats.protocol_errors == 0 and mux.stats.streams_active == 0
    return cp, agent


async def test_fast_path_is_active_on_the_locked_version(
    ws_or_wss_pair: WsPair, echo_server: TcpServer, sink_server: TcpServer
) -> None:
    pair = ws_or_wss_pair
    cp, agent = await run_traffic(pair, echo_server, sink_server)
    for mux in (cp, agent):
        assert mux.fast_path is not None
        # most messages went the fast way, both in and out, and the transport (the TLS
        # layer over wss) read into the fast path's own buffer
        assert mux.fast_path.received > 100 and mux.fast_path.sent > 100
        assert mux.fast_path.reads > 0
    assert "process_event" not in vars(pair.client)  # the hook went with the multiplexer


@pytest.mark.parametrize("how", ["flag", "env", "version", "internals"])
async def test_public_path_when_the_fast_path_is_unavailable(
    how: str, ws_pair: WsPair, echo_server: TcpServer, sink_server: TcpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    options: dict[str, Any] = {}
    if how == "flag":
        options["fast_path"] = False
    elif how == "env":
        monkeypatch.setenv(fastpath.ENV_SWITCH, "0")
    elif how == "version":  # a websockets outside the range the fast path knows
        monkeypatch.setattr(fastpath, "SUPPORTED", (">=99.0", "<99.1"))
    else:  # a websockets whose internals changed
        monkeypatch.setattr(fastpath, "_NEEDED", (*fastpath._NEEDED, "gone_in_a_later_version"))

    def no_internals(*args: Any, **kwargs: Any) -> None:  # fails the traffic if called
        raise AssertionError("the public path touched websockets' internals")

    monkeypatch.setattr(fastpath.FastPath, "write", no_internals)
    monkeypatch.setattr(fastpath.FastPath, "install_reader", no_internals)
    cp, agent = await run_traffic(ws_pair, echo_server, sink_server, **options)
    assert cp.fast_path is None and agent.fast_path is None
