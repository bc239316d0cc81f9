from gcs_ha.proto import raft_log_pb2 as _raft_log_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Completion(_message.Message):
    __slots__ = ("id", "reason", "message", "results", "value")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    id: int
    reason: int
    message: str
    results: _containers.RepeatedCompositeFieldContainer[_raft_log_pb2.Result]
    value: int
    def __init__(self, id: _Optional[int] = ..., reason: _Optional[int] = ..., message: _Optional[str] = ..., results: _Optional[_Iterable[_Union[_raft_log_pb2.Result, _Mapping]]] = ..., value: _Optional[int] = ...) -> None: ...

class Completions(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Completion]
    def __init__(self, items: _Optional[_Iterable[_Union[Completion, _Mapping]]] = ...) -> None: ...
