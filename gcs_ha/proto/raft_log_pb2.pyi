from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Put(_message.Message):
    __slots__ = ("table", "key", "value", "overwrite")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    table: str
    key: bytes
    value: bytes
    overwrite: bool
    def __init__(self, table: _Optional[str] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., overwrite: _Optional[bool] = ...) -> None: ...

class Delete(_message.Message):
    __slots__ = ("table", "keys")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    table: str
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, table: _Optional[str] = ..., keys: _Optional[_Iterable[bytes]] = ...) -> None: ...

class DeletePrefix(_message.Message):
    __slots__ = ("table", "prefix")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    table: str
    prefix: bytes
    def __init__(self, table: _Optional[str] = ..., prefix: _Optional[bytes] = ...) -> None: ...

class NextJobId(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Barrier(_message.Message):
    __slots__ = ("term", "node_id")
    TERM_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    term: int
    node_id: str
    def __init__(self, term: _Optional[int] = ..., node_id: _Optional[str] = ...) -> None: ...

class Request(_message.Message):
    __slots__ = ("put", "delete", "delete_prefix", "next_job_id", "barrier")
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    DELETE_PREFIX_FIELD_NUMBER: _ClassVar[int]
    NEXT_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BARRIER_FIELD_NUMBER: _ClassVar[int]
    put: Put
    delete: Delete
    delete_prefix: DeletePrefix
    next_job_id: NextJobId
    barrier: Barrier
    def __init__(self, put: _Optional[_Union[Put, _Mapping]] = ..., delete: _Optional[_Union[Delete, _Mapping]] = ..., delete_prefix: _Optional[_Union[DeletePrefix, _Mapping]] = ..., next_job_id: _Optional[_Union[NextJobId, _Mapping]] = ..., barrier: _Optional[_Union[Barrier, _Mapping]] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("version", "requests")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    version: int
    requests: _containers.RepeatedCompositeFieldContainer[Request]
    def __init__(self, version: _Optional[int] = ..., requests: _Optional[_Iterable[_Union[Request, _Mapping]]] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("added", "count", "job_id", "done", "error")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    added: bool
    count: int
    job_id: int
    done: bool
    error: str
    def __init__(self, added: _Optional[bool] = ..., count: _Optional[int] = ..., job_id: _Optional[int] = ..., done: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...
