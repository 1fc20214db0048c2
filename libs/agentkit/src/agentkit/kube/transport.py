"""The official client's credentials and connection pool, without its ``ApiClient``.

kubernetes 37.x generates its client with pydantic: ``kubernetes.client.api_client``
imports it (``SecretStr``, and ``ApiResponse`` is a pydantic model), which costs every
process that calls the API about 9 MiB (measured: VmRSS +9.2 MiB for that one import,
MALLOC_ARENA_MAX=1, after the registrar's own imports; issue 15). The pod reads replies
as JSON and never builds the generated models, so it needs only what the ``ApiClient``
hands to the official pieces that carry a request: the ``Configuration`` (host, CA,
client certificates, the bearer token and its refresh hook: ServiceAccount rotation,
exec plugins) and ``rest.RESTClientObject`` (the urllib3 pool). :class:`Transport` is
that hand-over, with the two methods of ``ApiClient`` the layer calls
(``param_serialize``, ``call_api``), built the way the ``ApiClient`` builds them: path
parameters quoted with the configuration's safe characters, query values as it formats
them (``true``/``false``, numbers as text), the ``BearerToken`` auth setting from the
configuration, its user agent. Request bodies are JSON documents already (dicts and
lists of plain values), so no model serialisation is needed.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import quote

__all__ = ["Transport"]


class Transport:
    """``param_serialize`` and ``call_api`` over the official ``Configuration`` and
    ``RESTClientObject``; ``configuration`` and ``close`` as on ``ApiClient``."""

    def __init__(self, configuration: Any) -> None:
        rest = importlib.import_module("kubernetes.client.rest")
        version = getattr(importlib.import_module("kubernetes"), "__version__", "")
        self.configuration = configuration
        self.rest_client = rest.RESTClientObject(configuration)
        self.default_headers = {"User-Agent": f"OpenAPI-Generator/{version}/python"}

    def close(self) -> None:
        self.rest_client.close()

    def param_serialize(self, method: str, resource_path: str, *,
                        path_params: dict[str, Any] | None = None,
                        query_params: list[tuple[str, Any]] | None = None,
                        header_params: dict[str, str] | None = None, body: Any = None,
                        auth_settings: list[str] | None = None
                        ) -> tuple[str, str, dict[str, str], Any, None]:
        """``(method, url, headers, body, post_params)`` for :meth:`call_api`."""
        config = self.configuration
        headers = {**(header_params or {}), **self.default_headers}
        for key, value in (path_params or {}).items():
            resource_path = resource_path.replace(
                "{" + key + "}", quote(str(value), safe=config.safe_chars_for_path_param))
        queries = list(query_params or [])
        for name in auth_settings or ():
            setting = config.auth_settings().get(name)
            if not setting:
                continue
            if setting["in"] == "header":
                headers[setting["key"]] = setting["value"]
            elif setting["in"] == "query":
                queries.append((setting["key"], setting["value"]))
        url = config.host + resource_path
        if queries:
            url += "?" + "&".join(f"{key}={quote(_query_value(value))}"
                                  for key, value in queries)
        return method, url, headers, body, None  # no form parameters

    def call_api(self, method: str, url: str, header_params: dict[str, str] | None = None,
                 body: Any = None, post_params: list[Any] | None = None,
                 _request_timeout: Any = None) -> Any:
        """Send one request; the client's ``RESTResponse`` (body unread)."""
        return self.rest_client.request(method, url, headers=header_params, body=body,
                                        post_params=post_params,
                                        _request_timeout=_request_timeout)


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
