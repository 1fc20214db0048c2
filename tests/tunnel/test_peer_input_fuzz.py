"""Hostile input from the control plane, as hypothesis suites (thousands of cases each,
zero escapes): tunnel text messages (through the multiplexer into the tunnel's own control
handler and command runner), OPEN payloads (the frame decoder and the target policy) and
command payloads. Each is answered with a reasoned refusal or handled; no exception ever
leaves the handler, and the connection is never the casualty."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentkit.config import Config
from agentkit.controlplane import TunnelStatus
from agentkit.identity import Identity
from agentkit.mux.frames import FrameType, StreamFrameError, decode_frame, encode_frame
from agentkit.mux.memory import memory_transport_pair
from agentkit.mux.multiplexer import Multiplexer
from agentkit.mux.settings import Role
from agentkit.peerinput import MAX_DEPTH, depth_of
from pipeops_tunnel.commands import CommandRunner
from pipeops_tunnel.connection import Connection
from pipeops_tunnel.sessions import validate
from pipeops_tunnel.targets import Checked, CheckTarget, Refused, Target, TargetPolicy

FUZZ = settings(max_examples=2000, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=6),
    max_leaves=40)

FIELDS = ["sessionId", "template", "user", "image", "persistentHome", "storage", "memory",
          "cpu", "port", "deletePVC"]
payloads = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(FIELDS), json_values | st.text(max_size=300)
                    | st.integers(-2**70, 2**70) | st.sampled_from(
                        ["s1", "firefox", "500m", "1Gi", "9" * 5000, "a" * 300, "1e999"]),
                    max_size=10),
    st.integers(1, 200).map(lambda n: json.loads("[" * n + "]" * n)),
)
actions = st.sampled_from(["start_session", "stop_session", "hibernate_session",
                           "wake_session", "", "x" * 1000]) | st.text(max_size=20)
commands = st.builds(
    lambda cid, action, payload, extra: {"type": "command", "id": cid, "action": action,
                                         "payload": payload, **extra},
    st.text(max_size=300) | json_values, actions | json_values, payloads,
    st.dictionaries(st.text(max_size=5), json_values, max_size=2))
texts = st.one_of(
    st.text(max_size=200),
    commands.map(json.dumps),
    st.builds(lambda kind, body: json.dumps({"type": kind, **body}),
              st.sampled_from(["hello_ack", "command", "drain", "error", "x"])
              | st.text(max_size=50) | json_values,
              st.dictionaries(st.sampled_from(["reason", "window", "forwards", "id"]),
                              json_values, max_size=4)),
    st.integers(1, 5000).map(lambda n: "[" * n),
    st.integers(1, 3000).map(lambda n: '{"type":"command","payload":' + "[" * n + "]" * n
                             + "}"),
    st.integers(4000, 6000).map(lambda n: '{"type":"x","n":' + "1" * n + "}"),
)


class Sent:
    """The command runner's peer: what it answered."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def __call__(self, message: dict[str, Any]) -> bool:
        self.messages.append(message)
        return True


async def no_sessions() -> None:
    return None


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


class HandlerFailed(logging.Handler):
    """Collects the lines that say a handler raised (an escape)."""

    def __init__(self) -> None:
        super().__init__()
        self.escapes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "failed" in record.getMessage() and record.levelno >= logging.ERROR:
            self.escapes.append(record.getMessage())


@FUZZ
@given(text=texts)
def test_any_tunnel_text_message_is_handled_or_refused(
        loop: asyncio.AbstractEventLoop, text: str) -> None:
    async def run() -> None:
        agent_end, _peer = memory_transport_pair()
        runner = CommandRunner(no_sessions)
        sent = Sent()
        runner.attach(sent, sent)
        connection = Connection(
            Config(), Identity(), TunnelStatus(status="pending"), forwards=[],
            on_open=lambda _request: asyncio.sleep(0), commands=runner, version="0",
            on_mux=lambda _mux, _ack: None)
        mux = Multiplexer(agent_end, Role.AGENT, on_control=connection._on_control,
                          name="fuzz", fast_path=False)
        connection.mux = mux
        connection._hello_ack = asyncio.get_running_loop().create_future()  # hello sent
        mux._on_text(text)  # what the reader pump does with a text message
        try:
            message = json.loads(text)
            valid = isinstance(message, dict) and isinstance(message.get("type"), str) \
                and depth_of(message) <= MAX_DEPTH
        except (ValueError, RecursionError):
            valid = False
        if not valid:
            assert mux.queued_control == 1  # the error reply, with its reason
        elif message["type"] == "hello_ack":  # any hello_ack is taken, its junk ignored
            assert connection._hello_ack.done() and connection._hello_ack.exception() is None
        elif message["type"] == "command":
            # answered: an error without a valid id, else ack and (refused) failed
            assert sent.messages, message
            assert sent.messages[0]["type"] in ("ack", "error")
        await runner.close()
        await mux.close()

    watcher = HandlerFailed()
    for name in ("agentkit.mux", "pipeops_tunnel"):
        logging.getLogger(name).addHandler(watcher)
    try:
        loop.run_until_complete(run())
    finally:
        for name in ("agentkit.mux", "pipeops_tunnel"):
            logging.getLogger(name).removeHandler(watcher)
    assert watcher.escapes == []


@FUZZ
@given(action=actions, payload=payloads)
def test_any_command_payload_is_valid_or_a_reasoned_refusal(action: str, payload: Any) -> None:
    try:
        validated = validate(action, payload)
    except ValueError as exc:
        assert str(exc) and len(str(exc)) < 2000
    else:  # what passes is bounded by Kubernetes' rules
        assert len(validated.session_id) <= 55
        for value in (getattr(validated, "cpu", None), getattr(validated, "memory", None)):
            assert value is None or len(value) <= 40


def _gateway_answering(cluster_ip: str) -> CheckTarget:
    async def check(namespace: str, service: str, port: int) -> Checked:
        return Checked(namespace == "ok", "fuzz", cluster_ip=cluster_ip,
                       unresolved="" if cluster_ip else "no such service")
    return check


# what the gateway could answer for a Service's address: real ones, the metadata
# service's, loopback, and whatever a broken or hostile answer holds
cluster_ips = st.sampled_from(["10.96.0.10", "", "169.254.169.254", "fe80::1", "::1",
                               "127.0.0.1", "10.96.0.999"]) | st.text(max_size=80)


open_payloads = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(["forward", "service", "namespace", "port"]),
                    json_values | st.sampled_from(["echo", "ok", "svc", 443, True, -1, 2**40]),
                    max_size=4),
)


@FUZZ
@given(payload=open_payloads, cluster_ip=cluster_ips)
def test_any_open_payload_is_a_target_or_refused(
        loop: asyncio.AbstractEventLoop, payload: Any, cluster_ip: str) -> None:
    policy = TargetPolicy({"echo": "127.0.0.1:9"}, _gateway_answering(cluster_ip))
    body = json.dumps(payload).encode()
    try:
        frame = decode_frame(encode_frame(FrameType.OPEN, 1, body), 1 << 20)
    except StreamFrameError as exc:  # not an object, or too deep: RST with the reason
        assert exc.stream_id == 1
        return
    try:
        target = loop.run_until_complete(policy.resolve(frame.body or {}))
    except Refused as exc:
        assert exc.reason
    else:  # a forward named in the config, or a Service the gateway allowed at a real,
        # not link-local, address
        assert isinstance(target, Target)
        if target.label != "echo":
            assert payload["namespace"] == "ok"
            assert not ipaddress.ip_address(target.host).is_link_local
            assert target.host == str(ipaddress.ip_address(cluster_ip))


@FUZZ
@given(raw=st.binary(max_size=300) | st.integers(1, 5000).map(lambda n: b"[" * n))
def test_any_open_frame_payload_decodes_or_is_a_stream_error(raw: bytes) -> None:
    try:
        frame = decode_frame(encode_frame(FrameType.OPEN, 3, raw), 1 << 20)
    except StreamFrameError as exc:
        assert exc.stream_id == 3 and str(exc)
    else:
        assert isinstance(frame.body, dict)
