"""The tunnel allocation: ``GET /api/v1/tunnel/status`` until the control plane says ready.

Reply (PROTOCOL.md section 2): ``status (pending|ready|disabled), tunnel_url (ws[s]://...),
forwards[{name, remote_port}]``. Every reply is validated; a malformed one is an error
logged with its status code and a bounded excerpt, then retried like a network fault
(tenacity, full jitter). ``pending`` and ``disabled`` are polled every
``tunnel.status_poll_interval``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from agentkit.config import Config
from agentkit.retry import FailureReport, retrying
from pipeops_tunnel.identity import TunnelIdentity

log = logging.getLogger(__name__)

EXCERPT = 200
STATUSES = ("pending", "ready", "disabled")


class AllocationError(Exception):
    """The status call failed or its reply is not what the contract says."""


@dataclass(frozen=True)
class Allocation:
    status: str
    tunnel_url: str
    remote_ports: dict[str, int] = field(default_factory=dict)


def _excerpt(response: httpx.Response) -> str:
    text = response.text
    return text if len(text) <= EXCERPT else text[:EXCERPT] + "..."


def parse_allocation(code: int, body: Any) -> Allocation:
    """Validate a 200 reply's JSON; raises AllocationError naming what is wrong."""
    if not isinstance(body, dict):
        raise AllocationError(f"tunnel status reply {code}: not a JSON object")
    status = body.get("status")
    if status not in STATUSES:
        raise AllocationError(f"tunnel status reply {code}: status {status!r} is not one of "
                              + "|".join(STATUSES))
    url = body.get("tunnel_url") or ""
    if not isinstance(url, str):
        raise AllocationError(f"tunnel status reply {code}: tunnel_url is not a string")
    if status == "ready" and not url.startswith(("ws://", "wss://")):
        raise AllocationError(f"tunnel status reply {code}: ready without a ws:// or wss:// "
                              f"tunnel_url ({url[:80]!r})")
    forwards = body.get("forwards") or []
    if not isinstance(forwards, list):
        raise AllocationError(f"tunnel status reply {code}: forwards is not a list")
    ports: dict[str, int] = {}
    for item in forwards:
        if not (isinstance(item, dict) and isinstance(item.get("name"), str)
                and isinstance(item.get("remote_port", 0), int)
                and not isinstance(item.get("remote_port", 0), bool)):
            raise AllocationError(f"tunnel status reply {code}: bad forward entry "
                                  f"{str(item)[:80]}")
        ports[item["name"]] = int(item.get("remote_port", 0))
    return Allocation(status=status, tunnel_url=url, remote_ports=ports)


class AllocationClient:
    def __init__(self, config: Config, client: httpx.AsyncClient) -> None:
        self.config = config
        self.client = client

    async def fetch(self, identity: TunnelIdentity) -> Allocation:
        url = f"{self.config.pipeops.api_url}/api/v1/tunnel/status"
        try:
            response = await self.client.get(
                url, params={"cluster_id": identity.cluster_id, "agent_id": identity.agent_id},
                headers={"Authorization": f"Bearer {identity.cluster_token}"})
        except httpx.HTTPError as exc:
            raise AllocationError(f"tunnel status: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise AllocationError(f"tunnel status reply {response.status_code}: "
                                  f"{_excerpt(response)}")
        try:
            body = response.json()
        except ValueError:
            raise AllocationError(f"tunnel status reply 200 is not JSON: "
                                  f"{_excerpt(response)}") from None
        return parse_allocation(200, body)

    async def wait_ready(self, identity: Callable[[], TunnelIdentity],
                         on_waiting: Callable[[Allocation | None, str], None]) -> Allocation:
        """Poll until ``ready``; ``on_waiting(allocation, detail)`` reports each wait."""
        report = FailureReport(log, "asking for the tunnel allocation")

        while True:
            async for attempt in retrying(self.config.pipeops.reconnect,
                                          retry_on=lambda e: isinstance(e, AllocationError)):
                with attempt:
                    try:
                        allocation = await self.fetch(identity())
                    except AllocationError as exc:
                        report.failed(exc)
                        on_waiting(None, f"asking for the tunnel allocation failed: {exc}")
                        raise
            report.recovered()
            if allocation.status == "ready":
                return allocation
            on_waiting(allocation, "the control plane has not allocated the tunnel yet"
                       if allocation.status == "pending"
                       else "the control plane has disabled the tunnel for this cluster")
            await asyncio.sleep(self.config.tunnel.status_poll_interval)
