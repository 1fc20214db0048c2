"""The pod's one Kubernetes access layer, on the official ``kubernetes`` package.

* :class:`Kube` (``client``): get, list (one page, every page, metadata-only), create,
  replace, patch (merge, JSON, strategic, server-side apply), delete, status
  subresource, Events, ``/version`` and API-group discovery, on any :class:`Resource`
  (``resources``: built-in and custom kinds alike).
* ``watch``: one watch request as an async iterator (bookmarks, ``timeoutSeconds``), and
  :meth:`Kube.follow`, list-then-watch that resumes from the last resourceVersion and
  lists again by itself on a 410 (as the reply or as an ERROR event): the only place the
  pod handles a 410.
* :class:`KubeError` (``errors``): the one error, with ``status``, ``reason``,
  ``retryable`` and ``expired``.
* :class:`LazyKube` (``lazy``): the client made on first use.

Which client, and why: the synchronous one, run off the event loop (a daemon thread per
call; a watch read in a thread and handed over through a bounded queue). Measured on this
project (Python 3.11, ``ru_maxrss`` after the pod's common imports, then after importing
the client, then after one 500-pod list from kubesim; December 2026, kubernetes 37.0.2):

    sync ``kubernetes.client``, ApiClient.call_api:     49.2 -> 65.1 -> 69.1 MiB
    ``kubernetes.aio``, raw ApiClient.call_api:          49.2 -> 74.4 -> 75.8 MiB
    ``kubernetes.aio``, its generated CoreV1Api:          49.3 -> 74.5 -> 201.9 MiB

``kubernetes.aio`` costs 9-10 MiB more per process before any typed call (aiohttp and its
own generated package beside the sync one, which it still imports), and its generated
API classes build pydantic models for the whole API on first use (+126 MiB). The cost
issue's budgets (registrar 75, gateway 80 MiB) leave no room for that, so the sync
client it is; its threads are few (calls are short, a watch holds one). Requests go
through its ``Configuration`` and ``rest`` pool (:mod:`agentkit.kube.transport`), not its
``ApiClient``, whose module imports pydantic in 37.x (+9.2 MiB).

Importing this package does not import ``kubernetes``: that happens on the first
:meth:`Kube.connect`, so a service that never touches the cluster never pays for it (the
tunnel's own modules import it only through this layer, when a session command, the
session status watch or a Service target first asks for a client). ``kubernetes`` is a
dependency of the services that use this layer, not of agentkit.
"""

from agentkit.kube.client import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    Kube,
    OnCall,
)
from agentkit.kube.errors import KubeError
from agentkit.kube.lazy import LazyKube
from agentkit.kube.resources import Resource
from agentkit.kube.watch import Listed, Watched

__all__ = ["APPLY_PATCH", "JSON_PATCH", "MERGE_PATCH", "STRATEGIC_MERGE_PATCH", "Kube",
           "KubeError", "LazyKube", "Listed", "OnCall", "Resource", "Watched"]
