"""Which held route answers a public request: the Ingress spec's host and path rules.

* Host: the request's ``Host`` without its port, lower-cased; an exact hostname first,
  then the wildcard that covers it (``*.example.test`` matches ``a.example.test`` but
  neither ``example.test`` nor ``a.b.example.test``: one DNS label, as the Ingress spec).
* Path: ``Exact`` is string equality; ``Prefix`` matches element-wise on ``/``
  (``/foo`` matches ``/foo``, ``/foo/`` and ``/foo/bar``, never ``/foobar``; a trailing
  ``/`` in the rule is ignored); ``ImplementationSpecific`` is matched as ``Prefix``
  (the agent documents the same mapping). The longest matching path wins; at equal
  length ``Exact`` beats a prefix.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeops_controlplane.gateway.table import Route


def host_of(header: str) -> str:
    """The hostname of a ``Host`` header value (no port, lower case, no trailing dot)."""
    value = header.strip().lower()
    if value.startswith("["):  # an IPv6 literal
        return value.partition("]")[0] + "]"
    return value.rpartition(":")[0] if ":" in value else value.rstrip(".")


def wildcard_of(hostname: str) -> str | None:
    """The wildcard hostname that would cover ``hostname`` (``a.b.c`` -> ``*.b.c``)."""
    _, dot, rest = hostname.partition(".")
    return f"*.{rest}" if dot and rest else None


def path_matches(route: Route, path: str) -> bool:
    if route.path_type == "Exact":
        return path == route.path
    prefix = route.path.rstrip("/")
    if not prefix:
        return True
    return path == prefix or path.startswith(prefix + "/")


def pick(routes_of: Callable[[str], list[Route]], host_header: str, target: str
         ) -> Route | None:
    """The route for a request (its ``Host`` header and request target), or None."""
    hostname = host_of(host_header)
    path = target.split("?", 1)[0].split("#", 1)[0] or "/"
    for candidate in (hostname, wildcard_of(hostname)):
        if candidate is None:
            continue
        routes = routes_of(candidate)
        best: Route | None = None
        for route in routes:
            if not path_matches(route, path):
                continue
            if best is None or _rank(route) > _rank(best):
                best = route
        if best is not None:
            return best
    return None


def _rank(route: Route) -> tuple[int, int]:
    return (len(route.path.rstrip("/")) if route.path_type != "Exact" else len(route.path),
            1 if route.path_type == "Exact" else 0)
