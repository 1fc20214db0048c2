"""The control plane's end of the tunnel (PROTOCOL.md sections 2 and 3).

* :mod:`.settings`: :class:`TunnelSettings`, every knob and timeout.
* :mod:`.hub`: :class:`TunnelHub`, the WebSocket endpoint (its own ``websockets`` server,
  ``tunnel_url``), the handshake checks, hello/hello_ack, control messages.
* :mod:`.cluster`: one cluster's tunnel: allocation, the live session, counters.
* :mod:`.listeners`: the chisel-style ``R:port`` listeners, a stream per connection.
* :mod:`.commands`: commands sent to an agent and their outcomes.
* :mod:`.api`: the HTTP routes (status poll, commands, ``/debug/tunnels``).
* :mod:`.kubeconfig`: a kubeconfig whose server is the ``kubernetes-api`` port.

Wiring: ``create_app`` puts a :class:`TunnelHub` on ``app.state.tunnels`` and includes
:data:`routers`; the entry point starts the hub before uvicorn and stops it after.

The names below load on first use (PEP 562): ``make run`` and the tests import only
:mod:`.kubeconfig` (standard library and PyYAML), which would otherwise pull the whole
server (FastAPI, websockets) into every script that writes a kubeconfig.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeops_controlplane.tunnel.hub import NotConnected, TunnelHub
    from pipeops_controlplane.tunnel.kubeconfig import (
        TunnelNotReady,
        forward_port,
        kubeconfig_through_tunnel,
    )
    from pipeops_controlplane.tunnel.settings import TUNNEL_PATH, TunnelSettings

_WHERE = {
    "TUNNEL_PATH": "settings", "TunnelSettings": "settings",
    "NotConnected": "hub", "TunnelHub": "hub",
    "TunnelNotReady": "kubeconfig", "forward_port": "kubeconfig",
    "kubeconfig_through_tunnel": "kubeconfig",
}


def __getattr__(name: str) -> Any:
    if name == "routers":
        from pipeops_controlplane.tunnel.api import commands_router, debug_router, status_router

        value: Any = (status_router, commands_router, debug_router)
    elif name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


__all__ = [
    "TUNNEL_PATH",
    "NotConnected",
    "TunnelHub",
    "TunnelNotReady",
    "TunnelSettings",
    "forward_port",
    "kubeconfig_through_tunnel",
    "routers",
]
