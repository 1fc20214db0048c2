"""The control plane's REST API: one client for every container that calls it.

One typed core, ``ControlPlaneClient.request(method, path, reply_model, token=...)``: bearer
auth, every reply validated as a msgspec record, and every failure a typed
``ControlPlaneError`` that carries the status code, the server's ``Retry-After`` hint and a
bounded, token-free excerpt of the body. The endpoints (PROTOCOL.md sections 1, 2 and 4)
are thin methods on top: ``register``, ``heartbeat``, ``tunnel_status``; the gateway's route
calls are the same one-liners.

No error ever holds a token: the ``Authorization`` header is never part of a message,
``token`` fields in an excerpt are replaced with ``***``, and the excerpt goes through the
log masker (registered secrets, ``Bearer ...``) in case a reply echoes the request.
Replies are parsed and converted with ``agentkit.peerinput``: any parse failure, a
too-deep nesting included, is a ``BadReply``, never an escaping exception. Each reply
record says whether it converts strictly (``STRICT``) or in msgspec's lax mode (numeric
strings for numbers, ``"true"``/``1`` for booleans), as the pydantic models it replaced
did: lax, except the forwards of a tunnel status. Over 400 lines because every
endpoint's reply model sits next to the one core that decodes it.

Retries are the caller's (what to retry differs: registration retries forever, a
heartbeat never), with ``agentkit.retry.retrying``, whose wait honours ``retry_after``;
``transient`` says which errors are worth another attempt.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import re
import ssl
import uuid
from typing import Annotated, Any, ClassVar, Literal, TypeVar, overload

import httpx
import msgspec

from agentkit import logs
from agentkit.peerinput import Checked, PeerInputError, convert, parse_json

EXCERPT = 200  # characters of a reply body kept in an error


def excerpt(body: bytes | str, limit: int = EXCERPT) -> str:
    """A short, single-line, token-free view of a reply body."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        text = json.dumps(_redact(parse_json(text, what="reply")))
    except ValueError:  # PeerInputError: not JSON, or nested too deeply to walk
        text = re.sub(r"(?i)(token\"?\s*[:=]\s*\"?)[^\s\",}]+", r"\1***", text)
    # e.g. a proxy echoing the request headers: registered secrets, "Bearer ..." and the
    # like. Masked before cutting, so that a cut never leaves half a secret unrecognised.
    text = " ".join(logs.masker.mask(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "***" if "token" in k.lower() and v else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


# --- errors -----------------------------------------------------------------------------


class ControlPlaneError(Exception):
    """A call failed. ``kind`` names the failure for logs and metrics; ``retry_after`` is
    the server's hint in seconds (``Retry-After``), None when it gave none."""

    kind = "error"

    def __init__(self, message: str, status: int = 0, body: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after = retry_after

    def __str__(self) -> str:
        text = super().__str__()
        if self.status:
            text += f" (HTTP {self.status})"
        if self.body:
            text += f": {self.body}"
        return text


class Unreachable(ControlPlaneError):
    """Refused, reset, DNS, TLS or timed out: no usable HTTP reply."""

    kind = "unreachable"


class TimedOut(Unreachable):
    """No reply within the timeout."""


class ConnectionFailed(Unreachable):
    """Refused, reset or closed before a reply."""


class Unauthorized(ControlPlaneError):
    """401/403: the token is wrong. Not worth retrying."""

    kind = "unauthorized"


class NotFound(ControlPlaneError):
    """404: the control plane does not know this cluster (re-register)."""

    kind = "not_found"


class Conflict(ControlPlaneError):
    """409: the request contradicts what the control plane holds (a host another cluster
    owns, an agent id that is not this cluster's). Retrying the same request won't help."""

    kind = "conflict"


class Invalid(ControlPlaneError):
    """400/422: the control plane refused the request's content. Not worth retrying."""

    kind = "invalid"


class Throttled(ControlPlaneError):
    """429: too many requests; retry after ``retry_after`` seconds."""

    kind = "throttled"


class ServerError(ControlPlaneError):
    """5xx: the control plane is in trouble; retry later."""

    kind = "server_error"


class BadReply(ControlPlaneError):
    """A reply we cannot use: unexpected status, not JSON, or not what the model says."""

    kind = "bad_reply"


def transient(exc: BaseException) -> bool:
    """Worth another attempt: no reply, throttled, a server error or a garbled reply."""
    return isinstance(exc, (Unreachable, Throttled, ServerError, BadReply))


# --- reply models -----------------------------------------------------------------------


class ReplyRecord(Checked):
    """A reply's record: unknown fields are ignored (a newer control plane may add some);
    ``STRICT`` says whether values are converted without coercion."""

    STRICT: ClassVar[bool] = False


Reply = TypeVar("Reply", bound=ReplyRecord)
Count = Annotated[int, msgspec.Meta(ge=0)]


def _cluster_id(value: str) -> str:
    return str(uuid.UUID(value))


def _header_token(value: str) -> str:
    if not value.strip():
        raise ValueError("the cluster token is empty")
    # it goes into an Authorization header: what one cannot carry is refused here,
    # not found by every heartbeat
    if not (value.isascii() and value.isprintable()) or any(c.isspace() for c in value):
        raise ValueError("the cluster token has characters a header cannot carry")
    return value


class RegisterReply(ReplyRecord):
    """Registration reply: ``cluster_id`` (UUID) and the cluster ``token`` are required."""

    checks = {"cluster_id": _cluster_id, "token": _header_token}

    cluster_id: str
    token: str
    name: str = ""
    status: str = ""
    workspace_id: str = ""
    tunnel_url: str = ""
    gateway_url: str = ""


class Forward(msgspec.Struct):
    name: str
    remote_port: int = 0


class TunnelStatus(ReplyRecord):
    """``GET /api/v1/tunnel/status`` (PROTOCOL.md section 2). Strict: a forward's port is
    a number, never a string; a ``null`` URL or forward list means none."""

    STRICT = True
    null_is_default = frozenset({"tunnel_url", "forwards"})

    status: Literal["pending", "ready", "disabled"]
    tunnel_url: str = ""
    forwards: list[Forward] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.status == "ready" and not self.tunnel_url.startswith(("ws://", "wss://")):
            raise ValueError("ready without a ws:// or wss:// tunnel_url "
                             f"({self.tunnel_url[:80]!r})")

    @property
    def remote_ports(self) -> dict[str, int]:
        return {f.name: f.remote_port for f in self.forwards}


class HeldRoute(ReplyRecord):
    """One route as the control plane holds it (PROTOCOL.md section 4)."""

    hostname: str
    path: str
    namespace: str
    ingress_name: str
    path_type: str
    service_name: str
    service_port: int
    tls: bool = False
    routing_mode: str = "tunnel"
    public_endpoint: str = ""

    def content(self) -> dict[str, Any]:
        fields = msgspec.structs.asdict(self)
        del fields["hostname"], fields["path"]
        return fields


class RoutesPage(ReplyRecord):
    routes: list[HeldRoute]
    continue_: str = msgspec.field(default="", name="continue")


class SyncReply(ReplyRecord):
    """One sync batch's outcome: ingresses ``rejected`` (malformed) and hosts in
    ``conflicts`` (another cluster's) were not taken; ``removed`` only on the last batch."""

    accepted: Count
    rejected: list[dict[str, Any]] = msgspec.field(default_factory=list)
    conflicts: list[dict[str, Any]] = msgspec.field(default_factory=list)
    removed: int | None = None


class RegisterRouteReply(ReplyRecord):
    created: bool = False
    changed: bool = True


class UnregisterReply(ReplyRecord):
    removed: Count


ROUTES = "/api/v1/gateway/routes"


# --- the client -------------------------------------------------------------------------


class ControlPlaneClient:
    """One HTTP connection pool to the control plane; ``aclose`` when done."""

    def __init__(self, api_url: str, *, timeout: float, verify: ssl.SSLContext | bool = True,
                 user_agent: str = "pipeops-agent") -> None:
        self.api_url = api_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.api_url, timeout=httpx.Timeout(timeout), verify=verify,
            headers={"user-agent": user_agent, "accept": "application/json"},
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    @overload
    async def request(self, method: str, path: str, reply_model: type[Reply], *, token: str,
                      json: Any = None, params: dict[str, str] | None = None,
                      timeout: float | None = None) -> Reply: ...

    @overload
    async def request(self, method: str, path: str, reply_model: None, *, token: str,
                      json: Any = None, params: dict[str, str] | None = None,
                      timeout: float | None = None) -> None: ...

    async def request(self, method: str, path: str, reply_model: type[Reply] | None, *,
                      token: str, json: Any = None, params: dict[str, str] | None = None,
                      timeout: float | None = None) -> Reply | None:
        """One call, no retry. The reply validated as ``reply_model`` (None: any JSON
        object or an empty body is fine, and nothing is returned). Raises a
        ``ControlPlaneError`` subclass on every failure."""
        what = f"{method} {path}"
        try:
            response = await self._http.request(
                method, path, json=json, params=params,
                headers={"authorization": f"Bearer {token}"},
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else httpx.Timeout(timeout))
        except httpx.TimeoutException as exc:
            raise TimedOut(f"{what}: no reply in time ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            reason = logs.masker.mask(str(exc)) or type(exc).__name__
            raise ConnectionFailed(f"{what}: connection failed before a reply "
                                   f"({type(exc).__name__}: {reason})") from None
        status = response.status_code
        if not 200 <= status < 300:
            raise _status_error(what, response)
        return decode_reply(what, status, response.content, reply_model)

    # --- the endpoints (PROTOCOL.md) ----------------------------------------------------

    async def register(self, install_token: str, body: dict[str, Any]) -> RegisterReply:
        return await self.request("POST", "/api/v1/clusters/agent/register", RegisterReply,
                                  token=install_token, json=body)

    async def heartbeat(self, cluster_id: str, cluster_token: str, body: dict[str, Any],
                        timeout: float | None = None) -> None:
        await self.request("POST", f"/api/v1/clusters/agent/{cluster_id}/heartbeat", None,
                           token=cluster_token, json=body, timeout=timeout)

    async def tunnel_status(self, cluster_id: str, agent_id: str,
                            cluster_token: str) -> TunnelStatus:
        return await self.request("GET", "/api/v1/tunnel/status", TunnelStatus,
                                  token=cluster_token,
                                  params={"cluster_id": cluster_id, "agent_id": agent_id})


    # --- gateway routes (PROTOCOL.md section 4): 409 Conflict (another cluster's host, or
    # a sync with missing batches) and 422 Invalid are never retried ------------------

    async def routes_page(self, cluster_id: str, cluster_token: str, *, limit: int = 1000,
                          continue_: str = "") -> RoutesPage:
        params = {"cluster_id": cluster_id, "limit": str(limit)}
        if continue_:
            params["continue"] = continue_
        return await self.request("GET", ROUTES, RoutesPage, token=cluster_token,
                                      params=params)

    async def held_routes(self, cluster_id: str, cluster_token: str, *,
                          page_size: int = 1000) -> list[HeldRoute]:
        """Every route the control plane holds for the cluster, page by page."""
        out: list[HeldRoute] = []
        token = ""
        while True:
            page = await self.routes_page(cluster_id, cluster_token, limit=page_size,
                                          continue_=token)
            out.extend(page.routes)
            token = page.continue_
            if not token:
                return out

    async def sync_routes(self, cluster_token: str, body: dict[str, Any]) -> SyncReply:
        """One batch of a full sync (``cluster_id, sync_id, batch, last, ...``)."""
        return await self.request("POST", f"{ROUTES}/sync", SyncReply,
                                      token=cluster_token, json=body)

    async def register_route(self, cluster_token: str, body: dict[str, Any]
                             ) -> RegisterRouteReply:
        return await self.request("POST", f"{ROUTES}/register", RegisterRouteReply,
                                      token=cluster_token, json=body)

    async def unregister_route(self, cluster_token: str, cluster_id: str, hostname: str,
                               path: str | None = None) -> UnregisterReply:
        body: dict[str, Any] = {"cluster_id": cluster_id, "hostname": hostname}
        if path is not None:
            body["path"] = path
        return await self.request("POST", f"{ROUTES}/unregister", UnregisterReply,
                                      token=cluster_token, json=body)


@overload
def decode_reply(what: str, status: int, content: bytes, reply_model: type[Reply]) -> Reply: ...


@overload
def decode_reply(what: str, status: int, content: bytes, reply_model: None) -> None: ...


def decode_reply(what: str, status: int, content: bytes,
                 reply_model: type[Reply] | None) -> Reply | None:
    """A 2xx reply's body as ``reply_model`` (None: any JSON object or nothing); every
    way it can be wrong is a ``BadReply`` (the only exception this raises)."""
    payload: Any = None
    if content:
        try:
            payload = parse_json(content, what="reply")
        except PeerInputError as exc:
            raise BadReply(f"{what}: {exc}", status, excerpt(content)) from None
    if reply_model is None:
        if payload is not None and not isinstance(payload, dict):
            raise BadReply(f"{what}: reply is not a JSON object", status, excerpt(content))
        return None
    try:
        return convert(payload, reply_model, strict=reply_model.STRICT, what="reply")
    except PeerInputError as exc:  # every way a conversion fails
        raise BadReply(f"{what}: {exc}", status, excerpt(content)) from None


def _status_error(what: str, response: httpx.Response) -> ControlPlaneError:
    status = response.status_code
    body = excerpt(response.content)
    hint = retry_after(response.headers.get("retry-after"))
    if status in (401, 403):
        return Unauthorized(f"{what}: the control plane refused the token", status, body)
    if status == 404:
        return NotFound(f"{what}: not found", status, body)
    if status == 409:
        return Conflict(f"{what}: conflict", status, body)
    if status in (400, 422):
        return Invalid(f"{what}: request refused as invalid", status, body)
    if status == 429:
        return Throttled(f"{what}: too many requests", status, body, hint)
    if status >= 500:
        return ServerError(f"{what}: server error", status, body, hint)
    return BadReply(f"{what}: unexpected status", status, body)
