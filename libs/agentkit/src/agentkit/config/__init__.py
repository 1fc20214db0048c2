"""The agent's whole configuration: the schema (``schema``) loaded in layers (``loader``).

Every name the services import lives here, so ``from agentkit.config import Config,
load`` keeps working whichever module defines it.
"""

from agentkit.config.loader import (
    DEFAULT_CONFIG_PATH,
    ENV_VARS,
    ConfigError,
    load,
    parse_set,
)
from agentkit.config.schema import (
    AgentConfig,
    ApiConfig,
    Config,
    Duration,
    ForwardConfig,
    GatewayAPIConfig,
    GatewayConfig,
    GatewayEnvironmentConfig,
    GrpcConfig,
    IstioConfig,
    IstioServiceConfig,
    KubernetesConfig,
    LoggingConfig,
    MetricsConfig,
    PipeopsConfig,
    Port,
    RealtimeConfig,
    ReconnectConfig,
    TLSConfig,
    TunnelConfig,
)

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_VARS",
    "AgentConfig",
    "ApiConfig",
    "Config",
    "ConfigError",
    "Duration",
    "ForwardConfig",
    "GatewayAPIConfig",
    "GatewayConfig",
    "GatewayEnvironmentConfig",
    "GrpcConfig",
    "IstioConfig",
    "IstioServiceConfig",
    "KubernetesConfig",
    "LoggingConfig",
    "MetricsConfig",
    "PipeopsConfig",
    "Port",
    "RealtimeConfig",
    "ReconnectConfig",
    "TLSConfig",
    "TunnelConfig",
    "load",
    "parse_set",
]
