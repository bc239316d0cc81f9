from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MessageType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESOURCE_VIEW: _ClassVar[MessageType]
    COMMANDS: _ClassVar[MessageType]
RESOURCE_VIEW: MessageType
COMMANDS: MessageType

class CommandsSyncMessage(_message.Message):
    __slots__ = ("should_global_gc",)
    SHOULD_GLOBAL_GC_FIELD_NUMBER: _ClassVar[int]
    should_global_gc: bool
    def __init__(self, should_global_gc: _Optional[bool] = ...) -> None: ...

class ResourceViewSyncMessage(_message.Message):
    __slots__ = ("resources_available", "resources_total", "object_pulls_queued", "idle_duration_ms", "is_draining", "draining_deadline_timestamp_ms", "node_activity", "labels")
    class ResourcesAvailableEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ResourcesTotalEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RESOURCES_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    OBJECT_PULLS_QUEUED_FIELD_NUMBER: _ClassVar[int]
    IDLE_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    IS_DRAINING_FIELD_NUMBER: _ClassVar[int]
    DRAINING_DEADLINE_TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    NODE_ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    resources_available: _containers.ScalarMap[str, float]
    resources_total: _containers.ScalarMap[str, float]
    object_pulls_queued: bool
    idle_duration_ms: int
    is_draining: bool
    draining_deadline_timestamp_ms: int
    node_activity: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.ScalarMap[str, str]
    def __init__(self, resources_available: _Optional[_Mapping[str, float]] = ..., resources_total: _Optional[_Mapping[str, float]] = ..., object_pulls_queued: _Optional[bool] = ..., idle_duration_ms: _Optional[int] = ..., is_draining: _Optional[bool] = ..., draining_deadline_timestamp_ms: _Optional[int] = ..., node_activity: _Optional[_Iterable[str]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RaySyncMessage(_message.Message):
    __slots__ = ("version", "message_type", "sync_message", "node_id")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SYNC_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    version: int
    message_type: MessageType
    sync_message: bytes
    node_id: bytes
    def __init__(self, version: _Optional[int] = ..., message_type: _Optional[_Union[MessageType, str]] = ..., sync_message: _Optional[bytes] = ..., node_id: _Optional[bytes] = ...) -> None: ...

class RaySyncMessageBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[RaySyncMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[RaySyncMessage, _Mapping]]] = ...) -> None: ...
