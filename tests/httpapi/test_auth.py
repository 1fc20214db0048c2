"""Authentication: everything under /api/ and /ws needs the dashboard token (401 without
it or with a wrong one), /health, /ready, /version, /metrics and the docs stay open, and
the OpenAPI document lists every endpoint with the authentication it needs."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.httpapi.pod import Pod

OPEN = {"/health", "/ready", "/version", "/metrics", "/dashboard"}


def api_operations(pod: Pod) -> list[tuple[str, str]]:
    document = pod.api.get("/openapi.json", token="")
    out = []
    for path, methods in document["paths"].items():
        for method in methods:
            out.append((method.upper(), re.sub(r"\{[^}]+\}", "sessions", path)))
    return out


def test_api_needs_the_token(pod: Pod) -> None:
    operations = [(m, p) for m, p in api_operations(pod)
                  if p.startswith("/api/") and not p.startswith("/api/k8s/")]
    assert len(operations) >= 10
    for method, path in operations:
        for token in ("", "wrong-" + pod.token):
            status, body, headers = pod.api.request(method, path, {} if method == "POST"
                                                    else None, token=token)
            assert status == 401, (method, path, token, status, body)
            assert headers.get("www-authenticate", "").startswith("Bearer")
            assert pod.token not in str(body)
        status, _, _ = pod.api.request(method, path, {"type": "ping"} if method == "POST"
                                       else None, timeout=60,
                                       headers={"Accept": "application/json"}) \
            if "realtime" not in path else (200, None, None)
        assert status != 401, (method, path)


def test_a_lowercase_scheme_and_a_prefix_of_the_token_are_told_apart(pod: Pod) -> None:
    assert pod.api.request("GET", "/api/agent/status",
                           headers={"Authorization": f"bearer {pod.token}"},
                           token="")[0] == 200
    assert pod.api.request("GET", "/api/agent/status", token=pod.token[:-1])[0] == 401
    assert pod.api.request("GET", "/api/agent/status", token=pod.token + "x")[0] == 401
    assert pod.api.request("GET", "/api/agent/status", token="",
                           headers={"Authorization": pod.token})[0] == 401


def test_open_endpoints_need_no_token(pod: Pod) -> None:
    for path in (*OPEN, "/docs", "/openapi.json"):
        status, _, _ = pod.api.request("GET", path, token="")
        assert status == 200, path


def test_docs_load_nothing_from_outside(pod: Pod) -> None:
    status, page, _ = pod.api.request("GET", "/docs", token="")
    assert status == 200 and "/openapi.json" in page
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith("/docs/static/") for s in sources), sources
    for source in sources:
        with urllib.request.urlopen(pod.api.url + source, timeout=10) as reply:
            assert reply.status == 200 and reply.read(), source


def test_websocket_needs_the_token(pod: Pod) -> None:
    url = pod.api.url.replace("http", "ws") + "/ws"

    async def attempt(token: str) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with connect(url, additional_headers=headers, open_timeout=10):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(attempt("")) == 401
    assert asyncio.run(attempt("nope")) == 401
    assert asyncio.run(attempt(pod.token)) == 101


def test_openapi_lists_every_endpoint_with_its_auth(pod: Pod) -> None:
    document = pod.api.get("/openapi.json", token="")
    schemes = document["components"]["securitySchemes"]
    assert schemes["dashboardToken"] == {"type": "http", "scheme": "bearer",
                                         "description": schemes["dashboardToken"]["description"]}
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            security = operation.get("security")
            if path.startswith("/api/k8s/"):
                assert security == [{"kubernetesToken": []}], (method, path)
            elif path.startswith("/api/"):
                assert security == [{"dashboardToken": []}], (method, path)
            else:
                assert path in OPEN and not security, (method, path)
    served = set(document["paths"])
    for expected in ("/api/health/detailed", "/api/status/features", "/api/metrics/runtime",
                     "/api/status/connectivity", "/api/agent/status", "/api/agent/heartbeat",
                     "/api/control-plane/message", "/api/runners/{runner_id}/command",
                     "/api/realtime/events", "/api/realtime/logs", "/api/k8s/{path}",
                     *OPEN):
        assert expected in served, expected
    assert "/ws" in document["info"]["description"]


def test_a_generated_token_is_kept_in_the_state_dir(pod: Pod, tmp_path: Path) -> None:
    state = tmp_path / "state"
    api = pod.http_api("--state-dir", str(state), token="")
    stored = (state / "dashboard-token").read_text().strip()
    assert len(stored) >= 32 and (state / "dashboard-token").stat().st_mode & 0o777 == 0o600
    assert api.request("GET", "/api/agent/status", token=stored)[0] == 200
    assert api.request("GET", "/api/agent/status", token="")[0] == 401
    assert stored not in "\n".join(api.lines + api.stderr_lines)
    api.stop()
    again = pod.http_api("--state-dir", str(state), token="")
    assert again.request("GET", "/api/agent/status", token=stored)[0] == 200


def test_the_token_never_reaches_a_log_line(pod: Pod) -> None:
    pod.api.request("GET", "/api/agent/status", token="wrong")
    pod.api.request("GET", "/api/agent/status")
    assert pod.token not in "\n".join(pod.api.lines + pod.api.stderr_lines)


def test_the_token_anywhere_but_the_bearer_header_is_refused(pod: Pod) -> None:
    """A token in the query string (which access logs and proxies keep), under another
    scheme or in a cookie does not authenticate: every /api/ operation, the SSE streams
    and the WebSocket say 401."""
    operations = [(m, p) for m, p in api_operations(pod)
                  if p.startswith("/api/") and not p.startswith("/api/k8s/")]
    carriers: list[tuple[str, dict[str, str]]] = [
        (f"?token={pod.token}", {}), (f"?access_token={pod.token}", {}),
        ("", {"Authorization": f"Basic {pod.token}"}),
        ("", {"Authorization": f"Token {pod.token}"}),
        ("", {"Cookie": f"token={pod.token}"}),
    ]
    for method, path in operations:
        for query, headers in carriers:
            status, body, _ = pod.api.request(method, path + query,
                                              {} if method == "POST" else None,
                                              token="", headers=headers)
            assert status == 401, (method, path, query, headers.keys(), status)
            assert pod.token not in str(body)
    url = pod.api.url.replace("http", "ws") + "/ws"

    async def attempt(suffix: str, headers: dict[str, str]) -> int:
        try:
            async with connect(url + suffix, additional_headers=headers, open_timeout=10):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    for query, headers in carriers:
        assert asyncio.run(attempt(query, headers)) == 401, (query, headers.keys())


K8S_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def test_every_method_of_the_kubernetes_proxy_needs_a_kubernetes_token(pod: Pod) -> None:
    """/api/k8s/ without a token: 401 from us for every method (nothing is sent on with
    no credentials); with a wrong token: the API server's own 401, for every method."""
    for method in K8S_METHODS:
        body = {} if method in ("POST", "PUT", "PATCH") else None
        status, reply, headers = pod.api.request(method, "/api/k8s/api/v1/namespaces/default"
                                                 "/configmaps", body, token="")
        assert status == 401, (method, status, reply)
        assert headers.get("www-authenticate", "").startswith("Bearer"), method
        if method != "HEAD":
            assert "Kubernetes bearer token" in reply["detail"], method
        status, reply, _ = pod.api.request(method, "/api/k8s/api/v1/namespaces/default"
                                           "/configmaps", body, token="wrong-" + pod.token)
        # kubesim routes OPTIONS before it authenticates (405); every other method is the
        # API server's own 401
        assert status == (405 if method == "OPTIONS" else 401), (method, status, reply)
        if method != "HEAD":
            assert "Kubernetes bearer token" not in str(reply), method  # the API server's
