"""The tunnel allocation: ``GET /api/v1/tunnel/status`` until the control plane says ready.

Reply (PROTOCOL.md section 2, ``agentkit.controlplane.TunnelStatus``): ``status
(pending|ready|disabled), tunnel_url (ws[s]://...), forwards[{name, remote_port}]``. Any
failure (no reply, an error status, a reply the model refuses) is logged with its status
code and a bounded, token-free excerpt, then retried (tenacity: full jitter, or the
server's ``Retry-After``); a refused token too, since the registrar may be re-registering.
``pending`` and ``disabled`` are polled every ``tunnel.status_poll_interval``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from agentkit.config import Config
from agentkit.controlplane import ControlPlaneClient, ControlPlaneError, TunnelStatus
from agentkit.identity import Identity
from agentkit.retry import FailureReport, retrying

log = logging.getLogger(__name__)


class AllocationClient:
    def __init__(self, config: Config, client: ControlPlaneClient) -> None:
        self.config = config
        self.client = client

    async def fetch(self, identity: Identity) -> TunnelStatus:
        return await self.client.tunnel_status(identity.cluster_id, identity.agent_id,
                                               identity.cluster_token)

    async def wait_ready(self, identity: Callable[[], Identity],
                         on_waiting: Callable[[TunnelStatus | None, str], None]
                         ) -> TunnelStatus:
        """Poll until ``ready``; ``on_waiting(allocation, detail)`` reports each wait."""
        report = FailureReport(log, "asking for the tunnel allocation")

        while True:
            async for attempt in retrying(self.config.pipeops.reconnect, report=report,
                                          retry_on=lambda e: isinstance(e, ControlPlaneError)):
                with attempt:
                    try:
                        allocation = await self.fetch(identity())
                    except ControlPlaneError as exc:
                        on_waiting(None, f"asking for the tunnel allocation failed: {exc}")
                        raise
            report.recovered()
            if allocation.status == "ready":
                return allocation
            on_waiting(allocation, "the control plane has not allocated the tunnel yet"
                       if allocation.status == "pending"
                       else "the control plane has disabled the tunnel for this cluster")
            await asyncio.sleep(self.config.tunnel.status_poll_interval)
