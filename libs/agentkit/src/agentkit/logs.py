"""Logging for every container: JSON lines on stdout, secrets masked.

One line per record with ``time``, ``level``, ``service``, ``msg`` and the record's extra
fields, so ``kubectl logs POD -c tunnel`` reads cleanly and log shippers parse it.
``--log-format text`` gives a human line instead. Masking happens on the final text, so a
secret cannot slip out through an exception, a repr or an extra field: known secret
values (registered with ``register_secret``) and anything that looks like an
``Authorization`` header or a token field are replaced with ``***``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
import threading
from typing import Any, TextIO

MASK = "***"

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
    # uvicorn repeats its message with terminal colour codes: not for JSON lines.
    | {"color_message"}
)

_PATTERNS = [
    # Authorization: Bearer xyz / "Authorization": "Bearer xyz" / authorization=Basic xyz
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:bearer|basic)\s+)([^\s'\",}]+)"),
    re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9._~+/=-]{8,})"),
    # "token": "xyz", token=xyz, 'cluster_token': 'xyz', k8s_service_token ...
    re.compile(r"(?i)(\b[a-z0-9_]*token['\"]?\s*[:=]\s*['\"]?)([^\s'\",}]{4,})"),
]


class SecretMasker:
    """Replaces registered secret values and secret-shaped text with ``***``."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def register(self, value: str) -> None:
        if value and len(value) >= 4:
            with self._lock:
                self._secrets.add(value)

    def mask(self, text: str) -> str:
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        return text


masker = SecretMasker()


def register_secret(value: str) -> None:
    """Never print this value again, in any log line or event."""
    masker.register(value)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The extra fields a caller passed with ``extra={...}``."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}


_PLAIN = (int, float, bool, type(None))


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


class JSONFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "service": self.service,
            "msg": masker.mask(record.getMessage()),
            "logger": record.name,
        }
        for key, value in record_fields(record).items():
            entry[key] = value if isinstance(value, _PLAIN) else masker.mask(_text(value))
        if record.exc_info:
            entry["exc"] = masker.mask(self.formatException(record.exc_info))
        # Masked field by field above (patterns see unescaped text), and once more whole.
        return masker.mask(json.dumps(entry, default=str))


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        extra = " ".join(f"{k}={v}" for k, v in record_fields(record).items())
        line = f"{when} {record.levelname:<7} {self.service}: {record.getMessage()}"
        if extra:
            line += f"  {extra}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return masker.mask(line)


def configure(
    service: str, level: str = "info", fmt: str = "json", stream: TextIO | None = None
) -> logging.Handler:
    """Route every logger to one stdout handler in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JSONFormatter(service) if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries that are chatty at info level about every request.
    for noisy in ("httpx", "httpcore", "kubernetes.client.rest", "websockets", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return handler
