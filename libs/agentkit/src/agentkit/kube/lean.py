"""Import the official ``kubernetes`` client without what its package ``__init__`` files drag in.

``import kubernetes.client`` first runs ``kubernetes/__init__.py``, which imports every
subpackage: ``dynamic``, ``informer``, ``leaderelection``, ``stream`` (websocket-client),
``utils`` (whose ``__init__`` imports ``create_from_yaml`` and with it jsonschema, via
kubernetes_validate) and ``config``, whose ``__init__`` imports the kubeconfig loader
(requests, oauthlib, requests_oauthlib) even in a pod, which needs only
``config.incluster_config``. The pod uses ``client`` (``Configuration``, ``rest``,
``exceptions``; not the ``ApiClient``, which imports pydantic: ``agentkit.kube.transport``),
``watch``, ``utils.retry``/``keepalive`` (through ``rest``) and one of the two config
loaders (the kubeconfig one imports the ``ApiClient`` for its own use). Measured
(Python 3.11, kubernetes 37.0.2, VmRSS after the registrar's own imports, then after an
``ApiClient`` and what the layer imports): the full import +15.7 MiB; with
:func:`bare_packages` +6.3 in a pod and +9.6 with a
kubeconfig (``make run``).

:func:`bare_packages` registers :data:`BARE` without running their ``__init__`` (their
submodules import as usual, on demand: ``agentkit.lean``); it is idempotent,
thread-safe, and does nothing for a package already imported. ``kubernetes.__version__``
is still set. A kubernetes release that moves these modules fails
``tests/agentkit/test_kubeconfig.py``.
"""

from __future__ import annotations

from agentkit import lean

__all__ = ["BARE", "bare_packages"]

BARE = ("kubernetes", "kubernetes.config", "kubernetes.utils")
"""The packages whose ``__init__`` is skipped, parent first."""


def bare_packages() -> None:
    """Register :data:`BARE` without running their ``__init__`` (unless already imported)."""
    lean.bare_packages(BARE, version_of="kubernetes")
