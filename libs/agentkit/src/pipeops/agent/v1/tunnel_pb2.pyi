import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TunnelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TUNNEL_STATE_UNSPECIFIED: _ClassVar[TunnelState]
    TUNNEL_STATE_DISCONNECTED: _ClassVar[TunnelState]
    TUNNEL_STATE_CONNECTING: _ClassVar[TunnelState]
    TUNNEL_STATE_CONNECTED: _ClassVar[TunnelState]
    TUNNEL_STATE_DISABLED: _ClassVar[TunnelState]
TUNNEL_STATE_UNSPECIFIED: TunnelState
TUNNEL_STATE_DISCONNECTED: TunnelState
TUNNEL_STATE_CONNECTING: TunnelState
TUNNEL_STATE_CONNECTED: TunnelState
TUNNEL_STATE_DISABLED: TunnelState

class Forward(_message.Message):
    __slots__ = ("name", "local_addr", "remote_port")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ADDR_FIELD_NUMBER: _ClassVar[int]
    REMOTE_PORT_FIELD_NUMBER: _ClassVar[int]
    name: str
    local_addr: str
    remote_port: int
    def __init__(self, name: _Optional[str] = ..., local_addr: _Optional[str] = ..., remote_port: _Optional[int] = ...) -> None: ...

class TunnelStatus(_message.Message):
    __slots__ = ("state", "tunnel_url", "forwards", "active_streams", "streams_opened", "streams_closed", "bytes_in", "bytes_out", "reconnects", "connected_since", "last_error")
    STATE_FIELD_NUMBER: _ClassVar[int]
    TUNNEL_URL_FIELD_NUMBER: _ClassVar[int]
    FORWARDS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_STREAMS_FIELD_NUMBER: _ClassVar[int]
    STREAMS_OPENED_FIELD_NUMBER: _ClassVar[int]
    STREAMS_CLOSED_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    BYTES_OUT_FIELD_NUMBER: _ClassVar[int]
    RECONNECTS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_SINCE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    state: TunnelState
    tunnel_url: str
    forwards: _containers.RepeatedCompositeFieldContainer[Forward]
    active_streams: int
    streams_opened: int
    streams_closed: int
    bytes_in: int
    bytes_out: int
    reconnects: int
    connected_since: _timestamp_pb2.Timestamp
    last_error: str
    def __init__(self, state: _Optional[_Union[TunnelState, str]] = ..., tunnel_url: _Optional[str] = ..., forwards: _Optional[_Iterable[_Union[Forward, _Mapping]]] = ..., active_streams: _Optional[int] = ..., streams_opened: _Optional[int] = ..., streams_closed: _Optional[int] = ..., bytes_in: _Optional[int] = ..., bytes_out: _Optional[int] = ..., reconnects: _Optional[int] = ..., connected_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[str] = ...) -> None: ...

class StreamInfo(_message.Message):
    __slots__ = ("stream_id", "target", "state", "bytes_in", "bytes_out", "send_credit", "buffered_bytes", "opened_at")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    BYTES_OUT_FIELD_NUMBER: _ClassVar[int]
    SEND_CREDIT_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_BYTES_FIELD_NUMBER: _ClassVar[int]
    OPENED_AT_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    target: str
    state: str
    bytes_in: int
    bytes_out: int
    send_credit: int
    buffered_bytes: int
    opened_at: _timestamp_pb2.Timestamp
    def __init__(self, stream_id: _Optional[int] = ..., target: _Optional[str] = ..., state: _Optional[str] = ..., bytes_in: _Optional[int] = ..., bytes_out: _Optional[int] = ..., send_credit: _Optional[int] = ..., buffered_bytes: _Optional[int] = ..., opened_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetTunnelStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchTunnelStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListStreamsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListStreamsResponse(_message.Message):
    __slots__ = ("streams",)
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    streams: _containers.RepeatedCompositeFieldContainer[StreamInfo]
    def __init__(self, streams: _Optional[_Iterable[_Union[StreamInfo, _Mapping]]] = ...) -> None: ...

class RunCommandRequest(_message.Message):
    __slots__ = ("id", "action", "payload_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    action: str
    payload_json: str
    def __init__(self, id: _Optional[str] = ..., action: _Optional[str] = ..., payload_json: _Optional[str] = ...) -> None: ...

class CommandOutcome(_message.Message):
    __slots__ = ("id", "type", "result_json", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    result_json: str
    error: str
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., result_json: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionState(_message.Message):
    __slots__ = ("session_id", "state", "replicas", "ready_replicas")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    READY_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    state: str
    replicas: int
    ready_replicas: int
    def __init__(self, session_id: _Optional[str] = ..., state: _Optional[str] = ..., replicas: _Optional[int] = ..., ready_replicas: _Optional[int] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[SessionState]
    def __init__(self, sessions: _Optional[_Iterable[_Union[SessionState, _Mapping]]] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ("round_trip_seconds",)
    ROUND_TRIP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    round_trip_seconds: float
    def __init__(self, round_trip_seconds: _Optional[float] = ...) -> None: ...
