"""``ANY /api/k8s/{path}``: the Kubernetes API, proxied both ways as streams.

The caller's own ``Authorization: Bearer`` token goes to the API server unchanged; the
agent's ServiceAccount is never used, so the API server decides (a wrong token is
refused by it, with its own Status). A request without a bearer token is refused here
(401) and never forwarded. Request bodies stream up (``kubectl apply`` of a large file,
an upload) and replies stream down as they arrive: a ``?watch=1`` or a
``/log?follow=true`` reaches the client event by event, and ends when either side closes.

Where the API server is and which CA verifies it comes from the registrar
(``Registrar.GetKubernetesEndpoint``, from the official client's configuration): the
http-api carries no Kubernetes client and no credential. The endpoint is asked once and
asked again after a connection failure. Protocol upgrades (``exec``, ``attach``,
``port-forward``) are not proxied: they are answered 501.
"""

from __future__ import annotations

import logging
import ssl
from typing import Annotated

import httpx
from fastapi import APIRouter, Request, Security
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from starlette.background import BackgroundTask

from agentkit.grpcclient import Siblings
from agentkit.tls import client_context
from pipeops.agent.v1 import registrar_pb2
from pipeops_http_api.auth import bearer, kubernetes_scheme

log = logging.getLogger(__name__)

PREFIX = "/api/k8s"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
# sent on to the API server; everything else (cookies, hop-by-hop headers) is not
FORWARD_REQUEST = ("accept", "accept-encoding", "content-type", "content-encoding",
                   "user-agent", "impersonate-user", "impersonate-group", "impersonate-uid",
                   "audit-id", "x-request-id")
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer",
                        "upgrade", "proxy-authenticate", "proxy-authorization",
                        "content-length"})
TIMEOUT = httpx.Timeout(connect=10.0, read=None, write=60.0, pool=10.0)  # watches: no end


class Upstream:
    """The API server's client, built from the registrar's answer; rebuilt after a
    connection failure (the API server or the registrar may have moved)."""

    def __init__(self, siblings: Siblings) -> None:
        self.siblings = siblings
        self.server = ""
        self.sni = ""  # verify the certificate for this name instead of the URL's host
        self._client: httpx.AsyncClient | None = None

    async def client(self) -> tuple[httpx.AsyncClient | None, str]:
        if self._client is not None:
            return self._client, ""
        answer = await self.siblings.ask("registrar", "Registrar/GetKubernetesEndpoint",
                                         registrar_pb2.GetKubernetesEndpointRequest())
        if not answer.ok:
            return None, f"the registrar cannot be asked where the API server is: " \
                         f"{answer.problem}"
        endpoint = answer.reply
        if not endpoint.server:
            return None, f"no Kubernetes API: {endpoint.error}"
        self.server = endpoint.server.rstrip("/")
        self.sni = endpoint.tls_server_name
        self._client = httpx.AsyncClient(verify=_context(endpoint), timeout=TIMEOUT,
                                         trust_env=False, follow_redirects=False)
        return self._client, ""

    async def reset(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def close(self) -> None:
        await self.reset()


def _context(endpoint: registrar_pb2.KubernetesEndpoint) -> ssl.SSLContext:
    context = client_context()
    if endpoint.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif endpoint.ca_pem:
        context.load_verify_locations(cadata=endpoint.ca_pem)
    return context


def router(upstream: Upstream) -> APIRouter:
    api = APIRouter(tags=["Kubernetes API proxy (your Kubernetes token)"])

    @api.api_route(PREFIX + "/{path:path}", methods=METHODS,
                   summary="The Kubernetes API, streamed both ways with your own token "
                           "(e.g. kubectl --server http://HOST/api/k8s --token ...)")
    async def proxy(request: Request, path: str, credentials: Annotated[
            HTTPAuthorizationCredentials | None, Security(kubernetes_scheme)] = None
                    ) -> Response:
        token = bearer(request.headers.get("authorization"))
        if not token:
            return JSONResponse({"detail": "a Kubernetes bearer token is required "
                                 "(Authorization: Bearer <token>): it is passed to the API "
                                 "server as is"}, status_code=401,
                                headers={"WWW-Authenticate": 'Bearer realm="kubernetes"'})
        if request.headers.get("upgrade"):
            return JSONResponse({"detail": "protocol upgrades (exec, attach, port-forward) "
                                 "are not proxied"}, status_code=501)
        client, problem = await upstream.client()
        if client is None:
            return JSONResponse({"detail": problem}, status_code=503)
        url = f"{upstream.server}/{path}"
        if request.url.query:
            url += "?" + request.url.query
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARD_REQUEST}
        headers["Authorization"] = f"Bearer {token}"
        has_body = request.method in ("POST", "PUT", "PATCH") or \
            request.headers.get("content-length") not in (None, "0")
        outgoing = client.build_request(
            request.method, url, headers=headers,
            content=request.stream() if has_body else None,
            extensions={"sni_hostname": upstream.sni} if upstream.sni else None)
        try:
            reply = await client.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            await upstream.reset()
            log.warning("the Kubernetes API did not answer: %s", exc,
                        extra={"path": path[:200]})
            return JSONResponse({"detail": f"the Kubernetes API did not answer: "
                                 f"{type(exc).__name__}: {exc}"}, status_code=502)
        out_headers = {k: v for k, v in reply.headers.items() if k.lower() not in HOP_BY_HOP}
        return StreamingResponse(reply.aiter_raw(), status_code=reply.status_code,
                                 headers=out_headers, background=BackgroundTask(reply.aclose))

    return api
