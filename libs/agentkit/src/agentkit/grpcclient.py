"""Clients for the siblings' gRPC services, with deadlines on every call, honest about failure.

A sibling that is down is normal (it may be restarting): an UNAVAILABLE or
DEADLINE_EXCEEDED answer makes ``call`` return ``None`` with a debug line, and the caller
degrades ("tunnel: disconnected"). Any other code (UNIMPLEMENTED, INTERNAL,
INVALID_ARGUMENT...) means the contract is broken between two containers of one pod: it
also returns ``None`` (the caller degrades the same way), but it is logged at error level
once per kind (sibling, method, code) and kept in the caller's ``Service.Describe``
(``sibling_errors``) until that call succeeds again. Channels are created once and closed
by ``Siblings.close``.

``ask`` is ``call`` for a caller that must tell the cases apart (the http-api reports
them and answers 503, 409 or 504): it returns an :class:`Answer` with the status code.
Codes a method uses as answers (``HeartbeatNow``'s FAILED_PRECONDITION) are passed as
``expected``: they are neither logged nor kept as errors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import grpc

from agentkit.config import Config
from agentkit.status import ServiceStatus
from pipeops.agent.v1 import (
    gateway_pb2_grpc,
    registrar_pb2_grpc,
    service_pb2_grpc,
    tunnel_pb2_grpc,
)

log = logging.getLogger(__name__)

SIBLINGS = ("registrar", "tunnel", "gateway", "http_api")
DOWN = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
"""The codes that mean "the sibling is down or slow", not "the contract is broken"."""

STUBS: dict[str, Any] = {
    "Registrar": registrar_pb2_grpc.RegistrarStub,
    "Tunnel": tunnel_pb2_grpc.TunnelStub,
    "Gateway": gateway_pb2_grpc.GatewayStub,
    "Service": service_pb2_grpc.ServiceStub,
}


@dataclass(frozen=True)
class Answer:
    """A sibling's reply, or the status code and details it failed with."""

    reply: Any = None
    code: str = "OK"  # the gRPC status code's name
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reply is not None

    @property
    def down(self) -> bool:
        """The sibling is down or slow (not an error of the contract)."""
        return self.code in {code.name for code in DOWN}

    @property
    def problem(self) -> str:
        """One line saying why there is no reply (``""`` when there is)."""
        if self.reply is not None:
            return ""
        what = f"unreachable ({self.code})" if self.down else self.code
        return f"{what}: {self.detail}" if self.detail else what


class Siblings:
    def __init__(self, config: Config, status: ServiceStatus | None = None) -> None:
        """``status``: where errors are shown (the caller's ``Service.Describe``)."""
        self.config = config
        self.status = status
        self.deadline = config.grpc.deadline
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[tuple[str, str], Any] = {}
        self._logged: set[tuple[str, str, str]] = set()  # error kinds already logged

    def channel(self, sibling: str) -> grpc.aio.Channel:
        """``sibling`` is one of registrar, tunnel, gateway, http_api."""
        if sibling not in SIBLINGS:
            raise ValueError(f"no sibling named {sibling!r}")
        if sibling not in self._channels:
            port = getattr(self.config.grpc, sibling)
            self._channels[sibling] = grpc.aio.insecure_channel(
                f"{self.config.grpc.host}:{port}")
        return self._channels[sibling]

    def _rpc(self, sibling: str, method: str) -> Any:
        service, _, name = method.partition("/")
        if service not in STUBS or not name:
            raise ValueError(f"expected Service/Method with one of {sorted(STUBS)}: {method!r}")
        stub = self._stubs.get((sibling, service))
        if stub is None:
            stub = self._stubs[(sibling, service)] = STUBS[service](self.channel(sibling))
        return getattr(stub, name)

    async def call(self, sibling: str, method: str, request: Any, *,
                   timeout: float | None = None) -> Any:
        """``method`` as ``Service/Method`` (e.g. ``Gateway/CheckTarget``), with a deadline.

        The reply, or ``None`` when the call failed (down, or an error: see the module).
        """
        return (await self.ask(sibling, method, request, timeout=timeout)).reply

    async def ask(self, sibling: str, method: str, request: Any, *,
                  timeout: float | None = None,
                  expected: frozenset[grpc.StatusCode] = frozenset()) -> Answer:
        """``call``, with the status code of a failure in the :class:`Answer`."""
        rpc = self._rpc(sibling, method)
        try:
            reply = await rpc(request, timeout=timeout or self.deadline)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in expected:
                self._failed(sibling, method, exc)
            return Answer(None, exc.code().name, exc.details() or "")
        if self.status is not None:
            self.status.sibling_answered(sibling, method)
        return Answer(reply)

    def _failed(self, sibling: str, method: str, exc: grpc.aio.AioRpcError) -> None:
        code = exc.code()
        detail = exc.details() or ""
        if code in DOWN:
            log.debug("sibling down", extra={"sibling": sibling, "method": method,
                                             "code": code.name, "detail": detail})
            return
        if self.status is not None:
            self.status.sibling_failed(sibling, method, code.name, detail)
        kind = (sibling, method, code.name)
        if kind in self._logged:
            log.debug("sibling call failed again", extra={"sibling": sibling, "method": method,
                                                          "code": code.name})
            return
        self._logged.add(kind)
        log.error("sibling call failed: %s %s answered %s: %s", sibling, method, code.name,
                  detail, extra={"sibling": sibling, "method": method, "code": code.name})

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._stubs.clear()
