"""agentkit.kube.transport builds every request as the official ``ApiClient`` would (same
URL, query, auth and user agent) without importing it (kubernetes 37.x: pydantic, +9
MiB). The layer's own tests (tests/agentkit/test_kube.py) send through it to kubesim and a
real API server."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client import ApiClient, Configuration

from agentkit.kube.transport import Transport


def configuration(token: str = "t0ken") -> Any:
    config = Configuration(host="https://127.0.0.1:6443")
    config.api_key = {"BearerToken": token}
    config.api_key_prefix = {"BearerToken": "Bearer"}
    return config


@pytest.mark.parametrize(("template", "path_params", "query"), [
    ("/api/v1/namespaces/{namespace}/configmaps/{name}", {"namespace": "ns", "name": "a b/c"},
     []),
    ("/apis/apps/v1/namespaces/{namespace}/deployments", {"namespace": "n-1", "name": ""},
     [("labelSelector", "app=x,session in (a,b)"), ("limit", 500), ("watch", True),
      ("allowWatchBookmarks", False), ("continue", "eyJ2Ijoi+/="), ("timeoutSeconds", 30)]),
    ("/version", {}, [("fieldManager", "pipeops agent"), ("force", True)]),
])
def test_requests_are_built_as_the_api_client_builds_them(
        template: str, path_params: dict[str, str], query: list[tuple[str, Any]]) -> None:
    ours = Transport(configuration())
    theirs = ApiClient(configuration())
    try:
        headers = {"Accept": "application/json", "Content-Type": "application/merge-patch+json"}
        body = {"metadata": {"labels": {"a": "b"}}, "spec": {"replicas": 0}}
        built = ours.param_serialize("PATCH", template, path_params=dict(path_params),
                                     query_params=list(query), header_params=dict(headers),
                                     body=body, auth_settings=["BearerToken"])
        expected = theirs.param_serialize("PATCH", template, path_params=dict(path_params),
                                          query_params=list(query), header_params=dict(headers),
                                          body=body, auth_settings=["BearerToken"])
        assert built == expected
        assert built[2]["authorization"] == "Bearer t0ken"
    finally:
        ours.close()
        theirs.close()


def test_the_token_is_read_at_each_request_through_the_refresh_hook() -> None:
    """A rotated ServiceAccount token or an exec plugin's refresh: the configuration's
    hook runs before each request, as with the ApiClient."""
    config = configuration("old")
    transport = Transport(config)
    tokens = iter(["new-1", "new-2"])

    def refresh(conf: Any) -> None:
        conf.api_key["BearerToken"] = next(tokens)

    config.refresh_api_key_hook = refresh
    try:
        first = transport.param_serialize("GET", "/version", auth_settings=["BearerToken"])
        second = transport.param_serialize("GET", "/version", auth_settings=["BearerToken"])
        assert (first[2]["authorization"], second[2]["authorization"]) == (
            "Bearer new-1", "Bearer new-2")
    finally:
        transport.close()
