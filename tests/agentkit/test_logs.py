"""Logging: JSON lines with the required fields; secrets never printed."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from agentkit import logs


@pytest.fixture
def capture() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    logs.configure("tunnel", "debug", "json", stream)
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_fields(capture: io.StringIO) -> None:
    logging.getLogger("x").info("connected %s", "ok", extra={"stream_id": 7})
    (record,) = lines(capture)
    assert record["level"] == "info"
    assert record["service"] == "tunnel"
    assert record["msg"] == "connected ok"
    assert record["stream_id"] == 7
    assert str(record["time"]).endswith("+00:00")


def test_registered_secret_is_masked_everywhere(capture: io.StringIO) -> None:
    secret = "s3cr3t-install-token-value"
    logs.register_secret(secret)
    log = logging.getLogger("x")
    log.info("token is %s", secret)
    log.warning("failed", extra={"body": f'{{"detail": "{secret}"}}'})
    try:
        raise ValueError(f"bad {secret}")
    except ValueError:
        log.exception("boom")
    assert secret not in capture.getvalue()
    assert capture.getvalue().count(logs.MASK) >= 3


@pytest.mark.parametrize("text", [
    "Authorization: Bearer abcdefgh12345678",
    "{'Authorization': 'Bearer abcdefgh12345678'}",
    'request headers {"authorization": "Basic abcdefgh12345678"}',
    "sent cluster_token=abcdefgh12345678",
    '{"k8s_service_token": "abcdefgh12345678"}',
])
def test_secret_shaped_text_is_masked(capture: io.StringIO, text: str) -> None:
    logging.getLogger("x").info(text)
    assert "abcdefgh12345678" not in capture.getvalue()


def test_text_format_is_masked_too() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = list(root.handlers)
    try:
        logs.configure("gateway", "info", "text", stream)
        logs.register_secret("another-secret-value")
        logging.getLogger("y").info("using another-secret-value", extra={"k": 1})
    finally:
        root.handlers[:] = saved
    out = stream.getvalue()
    assert "gateway: using ***  k=1" in out
    assert "another-secret-value" not in out


def test_ordinary_text_is_left_alone(capture: io.StringIO) -> None:
    logging.getLogger("x").info("token_path=/var/run/secrets/token read")
    assert lines(capture)[0]["msg"] == "token_path=/var/run/secrets/token read"
