import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegistrationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REGISTRATION_STATE_UNSPECIFIED: _ClassVar[RegistrationState]
    REGISTRATION_STATE_UNREGISTERED: _ClassVar[RegistrationState]
    REGISTRATION_STATE_REGISTERED: _ClassVar[RegistrationState]
    REGISTRATION_STATE_REJECTED: _ClassVar[RegistrationState]
REGISTRATION_STATE_UNSPECIFIED: RegistrationState
REGISTRATION_STATE_UNREGISTERED: RegistrationState
REGISTRATION_STATE_REGISTERED: RegistrationState
REGISTRATION_STATE_REJECTED: RegistrationState

class Identity(_message.Message):
    __slots__ = ("agent_id", "cluster_id", "cluster_name", "workspace_id", "api_url", "tunnel_url", "gateway_url", "state", "registered_at", "generation")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_NAME_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    API_URL_FIELD_NUMBER: _ClassVar[int]
    TUNNEL_URL_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_URL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    cluster_id: str
    cluster_name: str
    workspace_id: str
    api_url: str
    tunnel_url: str
    gateway_url: str
    state: RegistrationState
    registered_at: _timestamp_pb2.Timestamp
    generation: int
    def __init__(self, agent_id: _Optional[str] = ..., cluster_id: _Optional[str] = ..., cluster_name: _Optional[str] = ..., workspace_id: _Optional[str] = ..., api_url: _Optional[str] = ..., tunnel_url: _Optional[str] = ..., gateway_url: _Optional[str] = ..., state: _Optional[_Union[RegistrationState, str]] = ..., registered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., generation: _Optional[int] = ...) -> None: ...

class GetIdentityRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchIdentityRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetHeartbeatRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("status", "tunnel_status", "interval_seconds", "sent_total", "errors_total", "last_attempt", "last_success", "last_error", "node_count", "pod_count", "k8s_version", "is_private", "routing_mode", "gateway_routes")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TUNNEL_STATUS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SENT_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ERRORS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    LAST_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    LAST_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    NODE_COUNT_FIELD_NUMBER: _ClassVar[int]
    POD_COUNT_FIELD_NUMBER: _ClassVar[int]
    K8S_VERSION_FIELD_NUMBER: _ClassVar[int]
    IS_PRIVATE_FIELD_NUMBER: _ClassVar[int]
    ROUTING_MODE_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ROUTES_FIELD_NUMBER: _ClassVar[int]
    status: str
    tunnel_status: str
    interval_seconds: int
    sent_total: int
    errors_total: int
    last_attempt: _timestamp_pb2.Timestamp
    last_success: _timestamp_pb2.Timestamp
    last_error: str
    node_count: int
    pod_count: int
    k8s_version: str
    is_private: bool
    routing_mode: str
    gateway_routes: int
    def __init__(self, status: _Optional[str] = ..., tunnel_status: _Optional[str] = ..., interval_seconds: _Optional[int] = ..., sent_total: _Optional[int] = ..., errors_total: _Optional[int] = ..., last_attempt: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_success: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[str] = ..., node_count: _Optional[int] = ..., pod_count: _Optional[int] = ..., k8s_version: _Optional[str] = ..., is_private: bool = ..., routing_mode: _Optional[str] = ..., gateway_routes: _Optional[int] = ...) -> None: ...

class HeartbeatNowRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HeartbeatNowResponse(_message.Message):
    __slots__ = ("delivered", "error", "heartbeat")
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    delivered: bool
    error: str
    heartbeat: Heartbeat
    def __init__(self, delivered: bool = ..., error: _Optional[str] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class CheckKubernetesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PermissionCheck(_message.Message):
    __slots__ = ("verb", "group", "resource", "namespace", "allowed", "reason", "name")
    VERB_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    verb: str
    group: str
    resource: str
    namespace: str
    allowed: bool
    reason: str
    name: str
    def __init__(self, verb: _Optional[str] = ..., group: _Optional[str] = ..., resource: _Optional[str] = ..., namespace: _Optional[str] = ..., allowed: bool = ..., reason: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class KubernetesCheck(_message.Message):
    __slots__ = ("reachable", "server", "version", "latency_seconds", "error", "permissions")
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    reachable: bool
    server: str
    version: str
    latency_seconds: float
    error: str
    permissions: _containers.RepeatedCompositeFieldContainer[PermissionCheck]
    def __init__(self, reachable: bool = ..., server: _Optional[str] = ..., version: _Optional[str] = ..., latency_seconds: _Optional[float] = ..., error: _Optional[str] = ..., permissions: _Optional[_Iterable[_Union[PermissionCheck, _Mapping]]] = ...) -> None: ...

class GetKubernetesEndpointRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KubernetesEndpoint(_message.Message):
    __slots__ = ("server", "ca_pem", "insecure_skip_verify", "tls_server_name", "error")
    SERVER_FIELD_NUMBER: _ClassVar[int]
    CA_PEM_FIELD_NUMBER: _ClassVar[int]
    INSECURE_SKIP_VERIFY_FIELD_NUMBER: _ClassVar[int]
    TLS_SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    server: str
    ca_pem: str
    insecure_skip_verify: bool
    tls_server_name: str
    error: str
    def __init__(self, server: _Optional[str] = ..., ca_pem: _Optional[str] = ..., insecure_skip_verify: bool = ..., tls_server_name: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...
