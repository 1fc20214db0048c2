"""The one error of the Kubernetes layer: what failed, the HTTP status and the API's reason.

Every failure of a call through ``agentkit.kube`` (a refused request, a broken connection,
an ERROR event in a watch) becomes a :class:`KubeError`, so callers test ``status``,
``reason`` and ``retryable`` and never the official client's exception types.
"""

from __future__ import annotations

import json
from typing import Any

# Statuses that say "try the same call again later": no reply (0), timeouts, throttling,
# the server or a proxy failing.
_RETRYABLE = frozenset({0, 408, 429, 500, 502, 503, 504})


class KubeError(Exception):
    """A Kubernetes API call failed.

    ``status`` is the HTTP code (0: no reply at all), ``reason`` the ``Status`` object's
    machine-readable reason (``NotFound``, ``AlreadyExists``, ``Conflict``, ``Expired``,
    ``Forbidden``, ...; empty when the server gave none) and ``message`` its human text.
    """

    def __init__(self, operation: str, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{operation}: {message}" + (f" ({status})" if status else ""))
        self.operation = operation
        self.status = status
        self.message = message
        self.reason = reason

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed later without changing it.

        A 409 ``Conflict`` (the object changed meanwhile) is retryable after reading it
        again; a 409 ``AlreadyExists`` is not. A 410 (the watch history is gone) is
        retryable by listing again (see :attr:`expired`). 400, 401, 403, 404, 405, 413,
        415 and 422 are not: the request or the credentials must change first.
        """
        if self.status == 409:
            return self.reason != "AlreadyExists"
        return self.status in _RETRYABLE or self.status == 410

    @property
    def expired(self) -> bool:
        """The resourceVersion asked for is too old: list again, then watch from there."""
        return self.status == 410

    @property
    def not_found(self) -> bool:
        return self.status == 404


def from_status(operation: str, status: int, reason_phrase: str, body: Any) -> KubeError:
    """The error for a refused call: the ``Status`` object's message and reason if the
    body is one, else the HTTP reason phrase."""
    doc: Any = body
    if isinstance(body, (bytes, bytearray, str)):
        try:
            doc = json.loads(body) if body else None
        except ValueError:
            doc = None
    message = reason_phrase or "request failed"
    reason = ""
    if isinstance(doc, dict) and doc.get("kind") == "Status":
        message = str(doc.get("message") or message)
        reason = str(doc.get("reason") or "")
    return KubeError(operation, status, message, reason)


def from_event(operation: str, obj: Any) -> KubeError:
    """The error an ERROR watch event carries (a ``Status`` object: 410 when expired)."""
    status = obj if isinstance(obj, dict) else {}
    code = status.get("code")
    return KubeError(operation, int(code) if isinstance(code, int) else 0,
                     str(status.get("message") or "watch error"), str(status.get("reason") or ""))
