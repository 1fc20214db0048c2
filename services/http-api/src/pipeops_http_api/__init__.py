"""The http-api container of pipeops-agent: the agent's HTTP face on :8080."""

from pipeops_http_api import lean_fastapi as _lean_fastapi  # before any FastAPI import

del _lean_fastapi
