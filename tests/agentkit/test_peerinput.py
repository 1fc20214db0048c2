"""Every peer-supplied document goes through one safe parse: any failure (not UTF-8, not
JSON, a number too long, nesting deep enough to make ``json.loads`` raise
``RecursionError`` or any later walk overflow) is a ``PeerInputError`` with a reason.
Control-plane replies, over real HTTP and as a hypothesis suite, are a model or a
``BadReply``: nothing else escapes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentkit.controlplane import (
    BadReply,
    ControlPlaneClient,
    RegisterReply,
    RegisterRouteReply,
    ReplyRecord,
    RoutesPage,
    SyncReply,
    TunnelStatus,
    UnregisterReply,
    decode_reply,
    excerpt,
)
from agentkit.peerinput import MAX_DEPTH, PeerInputError, depth_of, parse_json, parse_object

DEEP_ARRAY = b"[" * 100_000
DEEP_OBJECT = ('{"a":' * 5000 + "1" + "}" * 5000).encode()
JUST_TOO_DEEP = ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)).encode()


@pytest.mark.parametrize(("data", "reason"), [
    (DEEP_ARRAY, "nested too deeply"),
    (DEEP_OBJECT, "nested too deeply"),
    (JUST_TOO_DEEP, "nested too deeply"),
    (b"1" * 5000, "is not JSON"),  # past Python's int digit limit
    (b"\xff\xfe{}", "is not JSON"),
    (b"{not json", "is not JSON"),
    (b"", "is not JSON"),
])
def test_every_parse_failure_is_a_peer_input_error(data: bytes, reason: str) -> None:
    with pytest.raises(PeerInputError, match=reason):
        parse_json(data, what="message")


def test_what_parses_is_returned_and_objects_are_checked() -> None:
    nested = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert depth_of(parse_json(nested)) == MAX_DEPTH
    assert parse_object('{"type": "x"}') == {"type": "x"}
    with pytest.raises(PeerInputError, match="not a JSON object"):
        parse_object("[1]", what="message")
    assert issubclass(PeerInputError, ValueError)  # existing refusal paths catch it


async def _http_server(body: bytes) -> asyncio.Server:
    """A real HTTP server that answers every request 200 with ``body``."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


@pytest.fixture(params=[DEEP_ARRAY, DEEP_OBJECT, b'{"cluster_id": ' + b"9" * 5000 + b"}",
                        b"\xff" * 10], ids=["deep-array", "deep-object", "long-int", "binary"])
async def hostile(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    server = await _http_server(request.param)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_hostile_control_plane_reply_is_a_bad_reply(hostile: str) -> None:
    client = ControlPlaneClient(hostile, timeout=5.0)
    try:
        with pytest.raises(BadReply):
            await client.register("install-token", {"agent_id": "a"})
        with pytest.raises(BadReply):
            await client.tunnel_status("c", "a", "cluster-token")
        with pytest.raises(BadReply):
            await client.heartbeat("c", "cluster-token", {})
    finally:
        await client.aclose()


KEYS = st.sampled_from(["cluster_id", "token", "status", "tunnel_url", "forwards", "name",
                        "remote_port", "routes", "continue", "hostname", "path", "x"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(KEYS | st.text(max_size=8), inner, max_size=6),
    max_leaves=30)


def _shaped(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


replies = st.one_of(
    st.binary(max_size=200),
    json_values.map(_shaped),
    st.builds(lambda status, url, forwards: _shaped(
        {"status": status, "tunnel_url": url, "forwards": forwards}),
        st.sampled_from(["pending", "ready", "disabled", "x", None, 1]),
        st.one_of(st.none(), st.text(max_size=20), st.just("ws://h/t")),
        json_values),
    st.builds(lambda cid, token: _shaped({"cluster_id": cid, "token": token}),
              json_values | st.uuids().map(str), json_values),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
)


# registration, heartbeat (None: any object), allocation, routes
MODELS = [RegisterReply, None, TunnelStatus, RoutesPage, SyncReply, RegisterRouteReply,
          UnregisterReply]


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=replies, model=st.sampled_from(MODELS))
def test_any_control_plane_reply_is_a_model_or_a_bad_reply(
        body: bytes, model: type[ReplyRecord] | None) -> None:
    try:
        decoded = decode_reply("GET /x", 200, body, model)
    except BadReply as exc:
        assert str(exc)  # a reason, bounded: the excerpt is at most 200 characters
        assert len(exc.body) <= 200
    else:
        assert decoded is None if model is None else isinstance(decoded, model)
        if isinstance(decoded, RegisterReply):  # a header can carry what is accepted
            decoded.token.encode("ascii")
    assert len(excerpt(body)) <= 200
