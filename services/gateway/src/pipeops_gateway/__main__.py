"""Entry point of ``pipeops-gateway``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from typing import Any

from agentkit.runner import ServiceContext, idle, run_service


def setup(ctx: ServiceContext) -> Callable[[], Coroutine[Any, Any, None]]:
    return lambda: idle(ctx, "route sync is not built yet: no routes are published")


def main() -> None:
    sys.exit(run_service(
        "gateway",
        "Publishes Ingress and Gateway API routes through the control plane.",
        setup,
        dist="pipeops-gateway",
    ))


if __name__ == "__main__":
    main()
