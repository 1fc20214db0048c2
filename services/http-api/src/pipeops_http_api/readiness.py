"""Whether the agent is ready, asked of the siblings: one reason per thing that is not.

Ready means: the registrar is registered; the tunnel is connected when it is enabled
(``tunnel.enabled``; a tunnel the control plane disabled is not expected to connect);
the gateway has synced its routes when route sync is enabled
(``agent.enable_ingress_sync``). A sibling that cannot be asked counts as not ready, with
a reason that says so. The answers come from the siblings' own gRPC services, with the
usual deadline (``grpc.deadline``), asked at once.
"""

from __future__ import annotations

import asyncio

from agentkit.config import Config
from agentkit.grpcclient import Siblings
from pipeops.agent.v1 import gateway_pb2, registrar_pb2, tunnel_pb2


async def registrar_reason(siblings: Siblings) -> str:
    identity = await siblings.call("registrar", "Registrar/GetIdentity",
                                   registrar_pb2.GetIdentityRequest())
    if identity is None:
        return "registrar: cannot be asked (down, or see this service's sibling_errors)"
    if identity.state != registrar_pb2.REGISTRATION_STATE_REGISTERED:
        state = registrar_pb2.RegistrationState.Name(identity.state)
        return f"registrar: not registered ({state.removeprefix('REGISTRATION_STATE_').lower()})"
    return ""


async def tunnel_reason(siblings: Siblings) -> str:
    status = await siblings.call("tunnel", "Tunnel/GetStatus", tunnel_pb2.GetTunnelStatusRequest())
    if status is None:
        return "tunnel: cannot be asked (down, or see this service's sibling_errors)"
    if status.state in (tunnel_pb2.TUNNEL_STATE_CONNECTED, tunnel_pb2.TUNNEL_STATE_DISABLED):
        return ""
    state = tunnel_pb2.TunnelState.Name(status.state).removeprefix("TUNNEL_STATE_").lower()
    why = f": {status.last_error}" if status.last_error else ""
    return f"tunnel: not connected ({state}){why}"


async def gateway_reason(siblings: Siblings) -> str:
    status = await siblings.call("gateway", "Gateway/GetStatus",
                                 gateway_pb2.GetGatewayStatusRequest())
    if status is None:
        return "gateway: cannot be asked (down, or see this service's sibling_errors)"
    if not status.enabled:
        return f"gateway: routes not synced: {status.detail or 'route sync is off'}"
    if not status.HasField("last_sync"):
        why = status.last_error or status.detail  # the error, else what it is doing
        why = f": {why}" if why else ""
        return f"gateway: routes not synced yet{why}"
    return ""


async def not_ready(config: Config, siblings: Siblings) -> list[str]:
    """Why the agent is not ready; empty when it is."""
    checks = [registrar_reason(siblings)]
    if config.tunnel.enabled:
        checks.append(tunnel_reason(siblings))
    if config.agent.enable_ingress_sync:
        checks.append(gateway_reason(siblings))
    return [reason for reason in await asyncio.gather(*checks) if reason]
