"""A service built with ``agentkit.runner`` whose root task raises: for test_root_tasks.

``--die-after SECONDS``: the root task ``test:doomed`` raises RuntimeError then.
``--finish``: the root task returns instead (its job done: the service keeps running).
It poses as the gateway (the runner takes its ports and keys from the service's name).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from agentkit.runner import ServiceContext, idle, run_service


def setup(ctx: ServiceContext) -> Callable[[], Coroutine[Any, Any, None]]:
    async def doomed() -> None:
        await asyncio.sleep(float(ctx.args.die_after))
        if ctx.args.finish:
            logging.getLogger(__name__).info("the doomed task finished its job")
            return
        raise RuntimeError("injected fault")

    async def main() -> None:
        ctx.spawn(doomed(), name="test:doomed")
        await idle(ctx, "waiting for the doomed task")

    return main


if __name__ == "__main__":
    argv = sys.argv[1:]
    finish = "--finish" in argv
    argv = [a for a in argv if a != "--finish"]
    die_after = "0.3"
    if "--die-after" in argv:
        at = argv.index("--die-after")
        die_after = argv[at + 1]
        del argv[at:at + 2]

    def setup_with(ctx: ServiceContext) -> Callable[[], Coroutine[Any, Any, None]]:
        ctx.args.die_after, ctx.args.finish = die_after, finish
        return setup(ctx)

    sys.exit(run_service("gateway", "a test service whose root task dies", setup_with,
                         dist="pipeops-gateway", argv=argv))
