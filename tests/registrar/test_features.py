"""The features sent at registration are what the agent serves, not what config asks."""

from __future__ import annotations

import pytest

from agentkit.config import ConfigError, load
from pipeops_registrar.registration import served_features


def test_only_served_features_are_reported() -> None:
    everything_on = load(None, env={"PIPEOPS_ENABLE_INGRESS_SYNC": "true",
                                    "GATEWAY_ENABLED": "true", "PIPEOPS_TUNNEL_ENABLED": "true"})
    assert served_features(everything_on) == {
        "tunnel": True, "ingress_sync": True, "gateway": True,
        "websocket": True, "sse": True}
    tunnel_off = load(None, env={"PIPEOPS_TUNNEL_ENABLED": "false"})
    assert served_features(tunnel_off) == {
        "tunnel": False, "ingress_sync": False, "gateway": False,
        "websocket": True, "sse": True}


def test_removed_settings_are_unknown_keys() -> None:
    """Settings nothing read are gone: setting one is a clear error, never silently kept."""
    for key in ("agent.enable_websocket", "agent.enable_sse", "agent.node_name",
                "tunnel.max_frame"):
        with pytest.raises(ConfigError, match=f"unknown key {key} "):
            load(None, env={}, overrides={key: "1"})
