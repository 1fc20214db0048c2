import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClusterType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLUSTER_TYPE_UNSPECIFIED: _ClassVar[ClusterType]
    CLUSTER_TYPE_PUBLIC: _ClassVar[ClusterType]
    CLUSTER_TYPE_PRIVATE: _ClassVar[ClusterType]

class RoutingMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTING_MODE_UNSPECIFIED: _ClassVar[RoutingMode]
    ROUTING_MODE_DIRECT: _ClassVar[RoutingMode]
    ROUTING_MODE_TUNNEL: _ClassVar[RoutingMode]
CLUSTER_TYPE_UNSPECIFIED: ClusterType
CLUSTER_TYPE_PUBLIC: ClusterType
CLUSTER_TYPE_PRIVATE: ClusterType
ROUTING_MODE_UNSPECIFIED: RoutingMode
ROUTING_MODE_DIRECT: RoutingMode
ROUTING_MODE_TUNNEL: RoutingMode

class IngressController(_message.Message):
    __slots__ = ("name", "namespace", "port")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    name: str
    namespace: str
    port: int
    def __init__(self, name: _Optional[str] = ..., namespace: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class GatewayStatus(_message.Message):
    __slots__ = ("enabled", "cluster_type", "routing_mode", "public_endpoint", "route_count", "last_sync", "last_error", "ingress_controller", "detail", "routes_held", "routes_refused", "mass_delete_blocked", "consecutive_errors")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_TYPE_FIELD_NUMBER: _ClassVar[int]
    ROUTING_MODE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    ROUTE_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_SYNC_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    INGRESS_CONTROLLER_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    ROUTES_HELD_FIELD_NUMBER: _ClassVar[int]
    ROUTES_REFUSED_FIELD_NUMBER: _ClassVar[int]
    MASS_DELETE_BLOCKED_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    cluster_type: ClusterType
    routing_mode: RoutingMode
    public_endpoint: str
    route_count: int
    last_sync: _timestamp_pb2.Timestamp
    last_error: str
    ingress_controller: IngressController
    detail: str
    routes_held: int
    routes_refused: int
    mass_delete_blocked: str
    consecutive_errors: int
    def __init__(self, enabled: bool = ..., cluster_type: _Optional[_Union[ClusterType, str]] = ..., routing_mode: _Optional[_Union[RoutingMode, str]] = ..., public_endpoint: _Optional[str] = ..., route_count: _Optional[int] = ..., last_sync: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[str] = ..., ingress_controller: _Optional[_Union[IngressController, _Mapping]] = ..., detail: _Optional[str] = ..., routes_held: _Optional[int] = ..., routes_refused: _Optional[int] = ..., mass_delete_blocked: _Optional[str] = ..., consecutive_errors: _Optional[int] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("hostname", "namespace", "ingress_name", "path", "path_type", "service_name", "service_port", "tls", "source", "tls_secret")
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    INGRESS_NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    PATH_TYPE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_PORT_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TLS_SECRET_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    namespace: str
    ingress_name: str
    path: str
    path_type: str
    service_name: str
    service_port: int
    tls: bool
    source: str
    tls_secret: str
    def __init__(self, hostname: _Optional[str] = ..., namespace: _Optional[str] = ..., ingress_name: _Optional[str] = ..., path: _Optional[str] = ..., path_type: _Optional[str] = ..., service_name: _Optional[str] = ..., service_port: _Optional[int] = ..., tls: bool = ..., source: _Optional[str] = ..., tls_secret: _Optional[str] = ...) -> None: ...

class GetGatewayStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRoutesRequest(_message.Message):
    __slots__ = ("namespace", "hostname")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    hostname: str
    def __init__(self, namespace: _Optional[str] = ..., hostname: _Optional[str] = ...) -> None: ...

class ListRoutesResponse(_message.Message):
    __slots__ = ("routes",)
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    def __init__(self, routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ...) -> None: ...

class ResyncRequest(_message.Message):
    __slots__ = ("allow_mass_delete",)
    ALLOW_MASS_DELETE_FIELD_NUMBER: _ClassVar[int]
    allow_mass_delete: bool
    def __init__(self, allow_mass_delete: bool = ...) -> None: ...

class ResyncResponse(_message.Message):
    __slots__ = ("route_count",)
    ROUTE_COUNT_FIELD_NUMBER: _ClassVar[int]
    route_count: int
    def __init__(self, route_count: _Optional[int] = ...) -> None: ...

class CheckTargetRequest(_message.Message):
    __slots__ = ("namespace", "service", "port")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    service: str
    port: int
    def __init__(self, namespace: _Optional[str] = ..., service: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class CheckTargetResponse(_message.Message):
    __slots__ = ("allowed", "reason", "cluster_ip", "unresolved")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_IP_FIELD_NUMBER: _ClassVar[int]
    UNRESOLVED_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    reason: str
    cluster_ip: str
    unresolved: str
    def __init__(self, allowed: bool = ..., reason: _Optional[str] = ..., cluster_ip: _Optional[str] = ..., unresolved: _Optional[str] = ...) -> None: ...
