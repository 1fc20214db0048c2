"""The http-api container of pipeops-agent: the agent's HTTP face on :8080."""

import sys as _sys

# FastAPI asks, for every route it builds, whether a type is a pydantic v1 model, and
# imports ``pydantic.v1`` to find out (1.7 MiB resident). No model here is one (FastAPI
# refuses them anyway): the import fails at once and FastAPI answers "no" by itself.
_sys.modules.setdefault("pydantic.v1", None)  # type: ignore[arg-type]
