from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GcsStatus(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class MapFieldEntry(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ...) -> None: ...

class InternalKVGetRequest(_message.Message):
    __slots__ = ("key", "namespace")
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    namespace: bytes
    def __init__(self, key: _Optional[bytes] = ..., namespace: _Optional[bytes] = ...) -> None: ...

class InternalKVGetReply(_message.Message):
    __slots__ = ("status", "value")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    status: GcsStatus
    value: bytes
    def __init__(self, status: _Optional[_Union[GcsStatus, _Mapping]] = ..., value: _Optional[bytes] = ...) -> None: ...

class InternalKVMultiGetRequest(_message.Message):
    __slots__ = ("keys", "namespace")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    namespace: bytes
    def __init__(self, keys: _Optional[_Iterable[bytes]] = ..., namespace: _Optional[bytes] = ...) -> None: ...

class InternalKVMultiGetReply(_message.Message):
    __slots__ = ("status", "results")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    status: GcsStatus
    results: _containers.RepeatedCompositeFieldContainer[MapFieldEntry]
    def __init__(self, status: _Optional[_Union[GcsStatus, _Mapping]] = ..., results: _Optional[_Iterable[_Union[MapFieldEntry, _Mapping]]] = ...) -> None: ...

class InternalKVPutRequest(_message.Message):
    __slots__ = ("key", "value", "overwrite", "namespace")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    overwrite: bool
    namespace: bytes
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., overwrite: _Optional[bool] = ..., namespace: _Optional[bytes] = ...) -> None: ...

class InternalKVPutReply(_message.Message):
    __slots__ = ("status", "added")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    status: GcsStatus
    added: bool
    def __init__(self, status: _Optional[_Union[GcsStatus, _Mapping]] = ..., added: _Optional[bool] = ...) -> None: ...

class InternalKVDelRequest(_message.Message):
    __slots__ = ("key", "namespace", "del_by_prefix")
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    DEL_BY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    namespace: bytes
    del_by_prefix: bool
    def __init__(self, key: _Optional[bytes] = ..., namespace: _Optional[bytes] = ..., del_by_prefix: _Optional[bool] = ...) -> None: ...

class InternalKVDelReply(_message.Message):
    __slots__ = ("status", "deleted_num")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DELETED_NUM_FIELD_NUMBER: _ClassVar[int]
    status: GcsStatus
    deleted_num: int
    def __init__(self, status: _Optional[_Union[GcsStatus, _Mapping]] = ..., deleted_num: _Optional[int] = ...) -> None: ...

class InternalKVExistsRequest(_message.Message):
    __slots__ = ("key", "namespace")
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    namespace: bytes
    def __init__(self, key: _Optional[bytes] = ..., namespace: _Optional[bytes] = ...) -> None: ...

class InternalKVExistsReply(_message.Message):
    __slots__ = ("status", "exists")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    status: GcsStatus
    exists: bool
    def __init__(self, status: _Optional[_Union[GcsStatus, _Mapping]] = ..., exists: _Optional[bool] = ...) -> None: ...

class InternalKVKeysRequest(_message.Message):
    __slots__ = ("prefix", "namespace")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    prefix: bytes
    namespace: bytes
    def __init__(self, prefix: _Optional[bytes] = ..., namespace: _Optional[bytes] = ...) -> None: ...

class InternalKVKeysReply(_message.Message):
    __slots__ = ("status", "results")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    status: GcsStatus
    results: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, status: _Optional[_Union[GcsStatus, _Mapping]] = ..., results: _Optional[_Iterable[bytes]] = ...) -> None: ...

class GetInternalConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetInternalConfigReply(_message.Message):
    __slots__ = ("status", "config")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    status: GcsStatus
    config: str
    def __init__(self, status: _Optional[_Union[GcsStatus, _Mapping]] = ..., config: _Optional[str] = ...) -> None: ...
