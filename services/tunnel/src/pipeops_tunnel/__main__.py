"""Entry point of ``pipeops-tunnel``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from typing import Any

from agentkit.runner import ServiceContext, idle, run_service


def setup(ctx: ServiceContext) -> Callable[[], Coroutine[Any, Any, None]]:
    return lambda: idle(ctx, "the tunnel is not built yet: no connection is made")


def main() -> None:
    sys.exit(run_service(
        "tunnel",
        "Keeps the outbound WebSocket tunnel and serves its multiplexed streams and commands.",
        setup,
        dist="pipeops-tunnel",
    ))


if __name__ == "__main__":
    main()
