"""Shared runtime of the pipeops-agent containers.

One module per job: ``config`` (the settings model and its layered loading), ``logs``
(JSON lines, secrets masked), ``statefile`` (the shared volume), ``identity`` (the
identity record on it, and how siblings follow it), ``controlplane`` (the control plane's
REST client), ``events`` (the bus behind Events.Subscribe), ``status`` (what a service
says about itself), ``grpcserver`` and ``grpcclient`` (the localhost contract), ``retry``
(tenacity policies), ``metrics`` (the localhost Prometheus endpoint) and ``runner`` (a
container's process life).
The generated contract stubs live in ``pipeops.agent.v1`` (``make proto``).
"""

import sys as _sys

# httpx imports its command-line tool (click and pygments, ~5 MiB of RSS) whenever click
# is importable, as it is beside uvicorn, and then drops it when `rich` is missing. No
# container runs that tool: its import fails at once instead (httpx falls back by itself).
_sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
