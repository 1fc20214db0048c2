"""A :class:`Kube` made on first use, for services whose Kubernetes duties are optional.

A pod without RBAC or a kubeconfig still does its main job (the tunnel still tunnels);
the failure to make a client is said once, shown in the service's ``kubernetes`` check,
and tried again on the next use. Nothing imports ``kubernetes`` until the first use.
"""

from __future__ import annotations

import asyncio
import logging

from agentkit.config import KubernetesConfig
from agentkit.kube.client import Kube, OnCall
from agentkit.status import ServiceStatus

log = logging.getLogger(__name__)


class LazyKube:
    def __init__(self, cfg: KubernetesConfig, status: ServiceStatus | None = None, *,
                 on_call: OnCall | None = None) -> None:
        self.cfg = cfg
        self.status = status
        self.on_call = on_call
        self.client: Kube | None = None
        self.problem = ""
        self._lock = asyncio.Lock()

    async def get(self) -> Kube | None:
        """The client, or None (``problem`` says why)."""
        async with self._lock:
            if self.client is None:
                try:
                    self.client = await Kube.connect(self.cfg, on_call=self.on_call)
                except Exception as exc:
                    problem = f"no Kubernetes client config: {type(exc).__name__}: {exc}"
                    if problem != self.problem:  # said once; asked again on every use
                        log.error(problem)
                    self.problem = problem
                    if self.status is not None:
                        self.status.check("kubernetes", problem)
                else:
                    self.problem = ""
                    if self.status is not None:
                        self.status.check("kubernetes", "ok")
            return self.client

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None
