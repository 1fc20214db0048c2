"""``/api/k8s/``: the Kubernetes API through the http-api with the caller's own token:
real kubectl works through it, a watch streams events as they happen, a body streams up,
a wrong token is refused by the API server (kubesim), no token by us, and a missing
registrar (which says where the API server is) is a 503, not a 500."""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kubesim.tls import write_tls
from tests.helpers import free_port, tool, wait_for
from tests.httpapi.pod import HttpApi, Pod
from tests.httpapi.sse import close_now


@pytest.fixture(scope="module")
def tls_api(pod: Pod, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpApi]:
    """An http-api serving HTTPS: kubectl (client-go) sends credentials only over TLS
    (kubernetes/kubectl#744), so ``--server http://... --token`` would reach the proxy
    without the token, and be refused here."""
    files = write_tls(tmp_path_factory.mktemp("tls"), [])
    api = pod.http_api("--set", f"api.tls_cert_file={files.cert}",
                       "--set", f"api.tls_key_file={files.key}", ca_file=str(files.ca_cert))
    api.ca = str(files.ca_cert)  # type: ignore[attr-defined]
    yield api
    api.stop()


def kubectl(pod: Pod, api: HttpApi, *args: str, token: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("kubectl"), "--kubeconfig", "/dev/null",
                           "--server", api.url + "/api/k8s",
                           "--certificate-authority", api.ca,  # type: ignore[attr-defined]
                           "--token", pod.kubesim.token if token is None else token, *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_kubectl_through_the_proxy(pod: Pod, tls_api: HttpApi) -> None:
    pods = kubectl(pod, tls_api, "get", "pods", "-A", "-o", "json")
    assert pods.returncode == 0, pods.stderr
    names = {p["metadata"]["name"] for p in json.loads(pods.stdout)["items"]}
    direct = pod.kubesim.request("GET", "/api/v1/pods")[1]["items"]
    assert names == {p["metadata"]["name"] for p in direct}
    created = kubectl(pod, tls_api, "create", "namespace", "through-the-proxy")
    assert created.returncode == 0, created.stderr
    assert pod.kubesim.request("GET", "/api/v1/namespaces/through-the-proxy")[0] == 200


def test_a_wrong_token_is_refused_by_the_api_server(pod: Pod, tls_api: HttpApi) -> None:
    status, body, _ = pod.api.request("GET", "/api/k8s/api/v1/pods", token="not-a-k8s-token")
    assert status == 401
    assert body["kind"] == "Status" and body["reason"] == "Unauthorized"  # kubesim's answer
    refused = kubectl(pod, tls_api, "get", "pods", token="not-a-k8s-token")
    assert refused.returncode != 0 and "provide credentials" in refused.stderr


def test_no_token_is_refused_here(pod: Pod) -> None:
    status, body, headers = pod.api.request("GET", "/api/k8s/api/v1/pods", token="")
    assert status == 401 and "Kubernetes bearer token" in body["detail"]
    assert headers["www-authenticate"].startswith("Bearer")
    status, _, _ = pod.api.request("GET", "/api/k8s/api/v1/pods")  # the dashboard token
    assert status == 401  # is not a Kubernetes token: the API server says no


def test_a_watch_streams_as_it_happens(pod: Pod) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", pod.api.port, timeout=30)
    conn.request("GET", "/api/k8s/api/v1/namespaces?watch=1",
                 headers={"Authorization": f"Bearer {pod.kubesim.token}"})
    reply = conn.getresponse()
    assert reply.status == 200
    seen: list[dict[str, Any]] = []

    def read() -> None:
        try:
            for line in reply:
                seen.append({"at": time.monotonic(), **json.loads(line)})
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: any(e["object"]["metadata"]["name"] == "default" for e in seen), 20,
                 what="the initial ADDED events")
        created_at = time.monotonic()
        status, body = pod.kubesim.request("POST", "/api/v1/namespaces",
                                           {"metadata": {"name": "watched-live"}})
        assert status == 201, body
        event = wait_for(lambda: next((e for e in seen if e["object"]["metadata"]["name"]
                                       == "watched-live"), None), 20,
                         what="the new namespace on the open watch")
        assert event["type"] == "ADDED"
        assert event["at"] - created_at < 10  # generous: it came while the stream was open
    finally:
        close_now(conn)


def test_a_body_streams_up(pod: Pod) -> None:
    big = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big-upload"},
           "data": {f"k{n}": "x" * 1000 for n in range(200)}}
    raw = json.dumps(big).encode()
    conn = http.client.HTTPConnection("127.0.0.1", pod.api.port, timeout=30)

    def chunks() -> Any:
        for start in range(0, len(raw), 16384):
            yield raw[start:start + 16384]

    conn.request("POST", "/api/k8s/api/v1/namespaces/default/configmaps", body=chunks(),
                 headers={"Authorization": f"Bearer {pod.kubesim.token}",
                          "Content-Type": "application/json"}, encode_chunked=True)
    reply = conn.getresponse()
    body = json.loads(reply.read())
    conn.close()
    assert reply.status == 201, body
    stored = pod.kubesim.request("GET", "/api/v1/namespaces/default/configmaps/big-upload")[1]
    assert stored["data"] == big["data"]


def test_plain_http_kubectl_sends_no_token_and_is_refused_here(pod: Pod) -> None:
    refused = subprocess.run([tool("kubectl"), "--kubeconfig", "/dev/null", "--server",
                              pod.api.url + "/api/k8s", "--token", pod.kubesim.token,
                              "get", "pods"], capture_output=True, text=True, timeout=60,
                             check=False)
    assert refused.returncode != 0 and "provide credentials" in refused.stderr


def test_without_the_registrar_the_proxy_says_so(pod: Pod) -> None:
    api = pod.http_api(grpc={"registrar": free_port()})
    status, body, _ = api.request("GET", "/api/k8s/api/v1/pods", token=pod.kubesim.token)
    assert status == 503 and "registrar cannot be asked" in body["detail"]
