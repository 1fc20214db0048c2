"""FastAPI imported without what this server only needs when asked (bench/memory_notes.md).

* ``pydantic.v1``: FastAPI imports it for every route it builds, only to ask whether a
  type is a pydantic v1 model (1.7 MiB resident). No model here is one (FastAPI refuses
  them anyway): the import fails at once and FastAPI answers "no" by itself.
* FastAPI's own pydantic models (``fastapi.openapi.models``: the OpenAPI document, its
  schemas, the security schemes) are defined with pydantic's ``defer_build``: each builds
  its validator when first used (``/openapi.json``, a security scheme at start) instead of
  all of them at import (1.1 MiB resident). pydantic has no public switch for a default
  ``defer_build``; its config defaults are set for the import only, and where they are
  not (another pydantic) the import is the usual one.

Imported by the package's ``__init__``, so before any module of ours imports FastAPI.
"""

from __future__ import annotations

import sys

sys.modules.setdefault("pydantic.v1", None)  # type: ignore[arg-type]


def _import_fastapi() -> None:
    if "fastapi" in sys.modules:  # imported already: its models are built
        return
    from pydantic._internal import _config

    defaults: dict[str, object] | None = getattr(_config, "config_defaults", None)
    if not isinstance(defaults, dict) or "defer_build" not in defaults:
        import fastapi
        return
    before, defaults["defer_build"] = defaults["defer_build"], True
    try:
        import fastapi
        import fastapi.security  # noqa: F401
    finally:
        defaults["defer_build"] = before


_import_fastapi()
