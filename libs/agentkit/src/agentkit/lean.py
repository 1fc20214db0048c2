"""Import a package's submodules without running its ``__init__``.

Some packages' ``__init__`` imports far more than a service uses: ``kubernetes`` every
subpackage (``agentkit.kube.lean``), ``uvicorn`` its command line (click) and its reload
supervisor (watchfiles), ~2 MiB that the http-api, which runs ``uvicorn.Server`` in its own
loop, never calls. :func:`bare_packages` registers such a package as an empty module
object; its submodules then import as usual, on demand, and nothing else does.
Idempotent, thread-safe, and a no-op for a package already imported (its real
``__init__`` ran: nothing to save) or not installed (the real import says so).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import threading
from collections.abc import Iterable

__all__ = ["bare_packages"]

_lock = threading.Lock()


def bare_packages(names: Iterable[str], version_of: str = "") -> None:
    """Register ``names`` (parents before children) without running their ``__init__``;
    ``version_of``: set the first one's ``__version__`` from that distribution."""
    with _lock:
        for name in names:
            if name in sys.modules:
                continue
            spec = importlib.util.find_spec(name)
            if spec is None or spec.submodule_search_locations is None:
                return
            module = importlib.util.module_from_spec(spec)
            if version_of and "." not in name:
                setattr(module, "__version__", importlib.metadata.version(version_of))  # noqa: B010
            sys.modules[name] = module
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, module)
