import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ServiceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERVICE_STATE_UNSPECIFIED: _ClassVar[ServiceState]
    SERVICE_STATE_STARTING: _ClassVar[ServiceState]
    SERVICE_STATE_READY: _ClassVar[ServiceState]
    SERVICE_STATE_DEGRADED: _ClassVar[ServiceState]
    SERVICE_STATE_IDLE: _ClassVar[ServiceState]
    SERVICE_STATE_STOPPING: _ClassVar[ServiceState]
SERVICE_STATE_UNSPECIFIED: ServiceState
SERVICE_STATE_STARTING: ServiceState
SERVICE_STATE_READY: ServiceState
SERVICE_STATE_DEGRADED: ServiceState
SERVICE_STATE_IDLE: ServiceState
SERVICE_STATE_STOPPING: ServiceState

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SiblingError(_message.Message):
    __slots__ = ("sibling", "method", "code", "detail", "count", "last_at")
    SIBLING_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_AT_FIELD_NUMBER: _ClassVar[int]
    sibling: str
    method: str
    code: str
    detail: str
    count: int
    last_at: _timestamp_pb2.Timestamp
    def __init__(self, sibling: _Optional[str] = ..., method: _Optional[str] = ..., code: _Optional[str] = ..., detail: _Optional[str] = ..., count: _Optional[int] = ..., last_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Runtime(_message.Message):
    __slots__ = ("rss_bytes", "cpu_seconds", "threads", "open_fds", "loop_lag_seconds", "uptime_seconds", "packages", "tasks")
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    OPEN_FDS_FIELD_NUMBER: _ClassVar[int]
    LOOP_LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PACKAGES_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    rss_bytes: int
    cpu_seconds: float
    threads: int
    open_fds: int
    loop_lag_seconds: float
    uptime_seconds: float
    packages: _containers.RepeatedScalarFieldContainer[str]
    tasks: int
    def __init__(self, rss_bytes: _Optional[int] = ..., cpu_seconds: _Optional[float] = ..., threads: _Optional[int] = ..., open_fds: _Optional[int] = ..., loop_lag_seconds: _Optional[float] = ..., uptime_seconds: _Optional[float] = ..., packages: _Optional[_Iterable[str]] = ..., tasks: _Optional[int] = ...) -> None: ...

class ServiceInfo(_message.Message):
    __slots__ = ("name", "version", "started_at", "state", "detail", "checks", "metrics_url", "sibling_errors", "runtime")
    class ChecksEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    METRICS_URL_FIELD_NUMBER: _ClassVar[int]
    SIBLING_ERRORS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    started_at: _timestamp_pb2.Timestamp
    state: ServiceState
    detail: str
    checks: _containers.ScalarMap[str, str]
    metrics_url: str
    sibling_errors: _containers.RepeatedCompositeFieldContainer[SiblingError]
    runtime: Runtime
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[ServiceState, str]] = ..., detail: _Optional[str] = ..., checks: _Optional[_Mapping[str, str]] = ..., metrics_url: _Optional[str] = ..., sibling_errors: _Optional[_Iterable[_Union[SiblingError, _Mapping]]] = ..., runtime: _Optional[_Union[Runtime, _Mapping]] = ...) -> None: ...
