from gcs_ha.proto.ray import common_pb2 as _common_pb2
from gcs_ha.proto.ray import pubsub_pb2 as _pubsub_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ObjectPlasmaLocationUpdate(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ADDED: _ClassVar[ObjectPlasmaLocationUpdate]
    REMOVED: _ClassVar[ObjectPlasmaLocationUpdate]
ADDED: ObjectPlasmaLocationUpdate
REMOVED: ObjectPlasmaLocationUpdate

class PushTaskRequest(_message.Message):
    __slots__ = ("intended_worker_id", "task_spec", "sequence_number", "client_processed_up_to", "resource_mapping")
    INTENDED_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_SPEC_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PROCESSED_UP_TO_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_MAPPING_FIELD_NUMBER: _ClassVar[int]
    intended_worker_id: bytes
    task_spec: _common_pb2.TaskSpec
    sequence_number: int
    client_processed_up_to: int
    resource_mapping: _containers.RepeatedCompositeFieldContainer[_common_pb2.ResourceMapEntry]
    def __init__(self, intended_worker_id: _Optional[bytes] = ..., task_spec: _Optional[_Union[_common_pb2.TaskSpec, _Mapping]] = ..., sequence_number: _Optional[int] = ..., client_processed_up_to: _Optional[int] = ..., resource_mapping: _Optional[_Iterable[_Union[_common_pb2.ResourceMapEntry, _Mapping]]] = ...) -> None: ...

class PushTaskReply(_message.Message):
    __slots__ = ("return_objects", "dynamic_return_objects", "worker_exiting", "borrowed_refs", "is_retryable_error", "is_application_error", "was_cancelled_before_running", "actor_repr_name", "task_execution_error", "streaming_generator_return_ids")
    RETURN_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_RETURN_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    WORKER_EXITING_FIELD_NUMBER: _ClassVar[int]
    BORROWED_REFS_FIELD_NUMBER: _ClassVar[int]
    IS_RETRYABLE_ERROR_FIELD_NUMBER: _ClassVar[int]
    IS_APPLICATION_ERROR_FIELD_NUMBER: _ClassVar[int]
    WAS_CANCELLED_BEFORE_RUNNING_FIELD_NUMBER: _ClassVar[int]
    ACTOR_REPR_NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_EXECUTION_ERROR_FIELD_NUMBER: _ClassVar[int]
    STREAMING_GENERATOR_RETURN_IDS_FIELD_NUMBER: _ClassVar[int]
    return_objects: _containers.RepeatedCompositeFieldContainer[_common_pb2.ReturnObject]
    dynamic_return_objects: _containers.RepeatedCompositeFieldContainer[_common_pb2.ReturnObject]
    worker_exiting: bool
    borrowed_refs: _containers.RepeatedCompositeFieldContainer[_common_pb2.ObjectReferenceCount]
    is_retryable_error: bool
    is_application_error: bool
    was_cancelled_before_running: bool
    actor_repr_name: str
    task_execution_error: str
    streaming_generator_return_ids: _containers.RepeatedCompositeFieldContainer[_common_pb2.StreamingGeneratorReturnIdInfo]
    def __init__(self, return_objects: _Optional[_Iterable[_Union[_common_pb2.ReturnObject, _Mapping]]] = ..., dynamic_return_objects: _Optional[_Iterable[_Union[_common_pb2.ReturnObject, _Mapping]]] = ..., worker_exiting: _Optional[bool] = ..., borrowed_refs: _Optional[_Iterable[_Union[_common_pb2.ObjectReferenceCount, _Mapping]]] = ..., is_retryable_error: _Optional[bool] = ..., is_application_error: _Optional[bool] = ..., was_cancelled_before_running: _Optional[bool] = ..., actor_repr_name: _Optional[str] = ..., task_execution_error: _Optional[str] = ..., streaming_generator_return_ids: _Optional[_Iterable[_Union[_common_pb2.StreamingGeneratorReturnIdInfo, _Mapping]]] = ...) -> None: ...

class WaitForActorRefDeletedRequest(_message.Message):
    __slots__ = ("intended_worker_id", "actor_id")
    INTENDED_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    intended_worker_id: bytes
    actor_id: bytes
    def __init__(self, intended_worker_id: _Optional[bytes] = ..., actor_id: _Optional[bytes] = ...) -> None: ...

class WaitForActorRefDeletedReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NumPendingTasksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NumPendingTasksReply(_message.Message):
    __slots__ = ("num_pending_tasks",)
    NUM_PENDING_TASKS_FIELD_NUMBER: _ClassVar[int]
    num_pending_tasks: int
    def __init__(self, num_pending_tasks: _Optional[int] = ...) -> None: ...

class RayletNotifyGCSRestartRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RayletNotifyGCSRestartReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KillActorRequest(_message.Message):
    __slots__ = ("intended_actor_id", "force_kill", "death_cause")
    INTENDED_ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_KILL_FIELD_NUMBER: _ClassVar[int]
    DEATH_CAUSE_FIELD_NUMBER: _ClassVar[int]
    intended_actor_id: bytes
    force_kill: bool
    death_cause: _common_pb2.ActorDeathCause
    def __init__(self, intended_actor_id: _Optional[bytes] = ..., force_kill: _Optional[bool] = ..., death_cause: _Optional[_Union[_common_pb2.ActorDeathCause, _Mapping]] = ...) -> None: ...

class KillActorReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ActorCallArgWaitCompleteRequest(_message.Message):
    __slots__ = ("intended_worker_id", "task_id", "attempt_number")
    INTENDED_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    intended_worker_id: bytes
    task_id: bytes
    attempt_number: int
    def __init__(self, intended_worker_id: _Optional[bytes] = ..., task_id: _Optional[bytes] = ..., attempt_number: _Optional[int] = ...) -> None: ...

class ActorCallArgWaitCompleteReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetObjectStatusRequest(_message.Message):
    __slots__ = ("owner_worker_id", "object_id")
    OWNER_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    owner_worker_id: bytes
    object_id: bytes
    def __init__(self, owner_worker_id: _Optional[bytes] = ..., object_id: _Optional[bytes] = ...) -> None: ...

class GetObjectStatusReply(_message.Message):
    __slots__ = ("status", "object", "node_ids", "object_size")
    class ObjectStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        CREATED: _ClassVar[GetObjectStatusReply.ObjectStatus]
        OUT_OF_SCOPE: _ClassVar[GetObjectStatusReply.ObjectStatus]
        FREED: _ClassVar[GetObjectStatusReply.ObjectStatus]
    CREATED: GetObjectStatusReply.ObjectStatus
    OUT_OF_SCOPE: GetObjectStatusReply.ObjectStatus
    FREED: GetObjectStatusReply.ObjectStatus
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    OBJECT_SIZE_FIELD_NUMBER: _ClassVar[int]
    status: GetObjectStatusReply.ObjectStatus
    object: RayObject
    node_ids: _containers.RepeatedScalarFieldContainer[bytes]
    object_size: int
    def __init__(self, status: _Optional[_Union[GetObjectStatusReply.ObjectStatus, str]] = ..., object: _Optional[_Union[RayObject, _Mapping]] = ..., node_ids: _Optional[_Iterable[bytes]] = ..., object_size: _Optional[int] = ...) -> None: ...

class RayObject(_message.Message):
    __slots__ = ("data", "metadata", "nested_inlined_refs")
    DATA_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    NESTED_INLINED_REFS_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    metadata: bytes
    nested_inlined_refs: _containers.RepeatedCompositeFieldContainer[_common_pb2.ObjectReference]
    def __init__(self, data: _Optional[bytes] = ..., metadata: _Optional[bytes] = ..., nested_inlined_refs: _Optional[_Iterable[_Union[_common_pb2.ObjectReference, _Mapping]]] = ...) -> None: ...

class ReportGeneratorItemReturnsRequest(_message.Message):
    __slots__ = ("returned_objects", "worker_addr", "item_index", "generator_id", "attempt_number")
    RETURNED_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ADDR_FIELD_NUMBER: _ClassVar[int]
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    returned_objects: _containers.RepeatedCompositeFieldContainer[_common_pb2.ReturnObject]
    worker_addr: _common_pb2.Address
    item_index: int
    generator_id: bytes
    attempt_number: int
    def __init__(self, returned_objects: _Optional[_Iterable[_Union[_common_pb2.ReturnObject, _Mapping]]] = ..., worker_addr: _Optional[_Union[_common_pb2.Address, _Mapping]] = ..., item_index: _Optional[int] = ..., generator_id: _Optional[bytes] = ..., attempt_number: _Optional[int] = ...) -> None: ...

class ReportGeneratorItemReturnsReply(_message.Message):
    __slots__ = ("total_num_object_consumed",)
    TOTAL_NUM_OBJECT_CONSUMED_FIELD_NUMBER: _ClassVar[int]
    total_num_object_consumed: int
    def __init__(self, total_num_object_consumed: _Optional[int] = ...) -> None: ...

class UpdateGeneratorBackpressureConsumedRequest(_message.Message):
    __slots__ = ("generator_id", "total_num_object_consumed")
    GENERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_NUM_OBJECT_CONSUMED_FIELD_NUMBER: _ClassVar[int]
    generator_id: bytes
    total_num_object_consumed: int
    def __init__(self, generator_id: _Optional[bytes] = ..., total_num_object_consumed: _Optional[int] = ...) -> None: ...

class UpdateGeneratorBackpressureConsumedReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UpdateObjectLocationBatchRequest(_message.Message):
    __slots__ = ("intended_worker_id", "node_id", "object_location_updates")
    INTENDED_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_LOCATION_UPDATES_FIELD_NUMBER: _ClassVar[int]
    intended_worker_id: bytes
    node_id: bytes
    object_location_updates: _containers.RepeatedCompositeFieldContainer[ObjectLocationUpdate]
    def __init__(self, intended_worker_id: _Optional[bytes] = ..., node_id: _Optional[bytes] = ..., object_location_updates: _Optional[_Iterable[_Union[ObjectLocationUpdate, _Mapping]]] = ...) -> None: ...

class ObjectLocationUpdate(_message.Message):
    __slots__ = ("object_id", "plasma_location_update", "spilled_location_update", "generator_id")
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PLASMA_LOCATION_UPDATE_FIELD_NUMBER: _ClassVar[int]
    SPILLED_LOCATION_UPDATE_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    object_id: bytes
    plasma_location_update: ObjectPlasmaLocationUpdate
    spilled_location_update: ObjectSpilledLocationUpdate
    generator_id: bytes
    def __init__(self, object_id: _Optional[bytes] = ..., plasma_location_update: _Optional[_Union[ObjectPlasmaLocationUpdate, str]] = ..., spilled_location_update: _Optional[_Union[ObjectSpilledLocationUpdate, _Mapping]] = ..., generator_id: _Optional[bytes] = ...) -> None: ...

class ObjectSpilledLocationUpdate(_message.Message):
    __slots__ = ("spilled_url", "spilled_to_local_storage")
    SPILLED_URL_FIELD_NUMBER: _ClassVar[int]
    SPILLED_TO_LOCAL_STORAGE_FIELD_NUMBER: _ClassVar[int]
    spilled_url: str
    spilled_to_local_storage: bool
    def __init__(self, spilled_url: _Optional[str] = ..., spilled_to_local_storage: _Optional[bool] = ...) -> None: ...

class UpdateObjectLocationBatchReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetObjectLocationsOwnerRequest(_message.Message):
    __slots__ = ("intended_worker_id", "object_ids")
    INTENDED_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    intended_worker_id: bytes
    object_ids: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, intended_worker_id: _Optional[bytes] = ..., object_ids: _Optional[_Iterable[bytes]] = ...) -> None: ...

class GetObjectLocationsOwnerReply(_message.Message):
    __slots__ = ("object_location_infos",)
    OBJECT_LOCATION_INFOS_FIELD_NUMBER: _ClassVar[int]
    object_location_infos: _containers.RepeatedCompositeFieldContainer[_pubsub_pb2.WorkerObjectLocationsPubMessage]
    def __init__(self, object_location_infos: _Optional[_Iterable[_Union[_pubsub_pb2.WorkerObjectLocationsPubMessage, _Mapping]]] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("intended_task_id", "force_kill", "recursive", "caller_worker_id")
    INTENDED_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_KILL_FIELD_NUMBER: _ClassVar[int]
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    CALLER_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    intended_task_id: bytes
    force_kill: bool
    recursive: bool
    caller_worker_id: bytes
    def __init__(self, intended_task_id: _Optional[bytes] = ..., force_kill: _Optional[bool] = ..., recursive: _Optional[bool] = ..., caller_worker_id: _Optional[bytes] = ...) -> None: ...

class CancelTaskReply(_message.Message):
    __slots__ = ("requested_task_running", "attempt_succeeded")
    REQUESTED_TASK_RUNNING_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    requested_task_running: bool
    attempt_succeeded: bool
    def __init__(self, requested_task_running: _Optional[bool] = ..., attempt_succeeded: _Optional[bool] = ...) -> None: ...

class RequestOwnerToCancelTaskRequest(_message.Message):
    __slots__ = ("remote_object_id", "force_kill", "recursive")
    REMOTE_OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_KILL_FIELD_NUMBER: _ClassVar[int]
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    remote_object_id: bytes
    force_kill: bool
    recursive: bool
    def __init__(self, remote_object_id: _Optional[bytes] = ..., force_kill: _Optional[bool] = ..., recursive: _Optional[bool] = ...) -> None: ...

class RequestOwnerToCancelTaskReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCoreWorkerStatsRequest(_message.Message):
    __slots__ = ("intended_worker_id", "include_memory_info", "include_task_info", "limit")
    INTENDED_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_MEMORY_INFO_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TASK_INFO_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    intended_worker_id: bytes
    include_memory_info: bool
    include_task_info: bool
    limit: int
    def __init__(self, intended_worker_id: _Optional[bytes] = ..., include_memory_info: _Optional[bool] = ..., include_task_info: _Optional[bool] = ..., limit: _Optional[int] = ...) -> None: ...

class GetCoreWorkerStatsReply(_message.Message):
    __slots__ = ("core_worker_stats", "owned_task_info_entries", "running_task_ids", "tasks_total")
    CORE_WORKER_STATS_FIELD_NUMBER: _ClassVar[int]
    OWNED_TASK_INFO_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    RUNNING_TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    TASKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    core_worker_stats: _common_pb2.CoreWorkerStats
    owned_task_info_entries: _containers.RepeatedCompositeFieldContainer[_common_pb2.TaskInfoEntry]
    running_task_ids: _containers.RepeatedScalarFieldContainer[bytes]
    tasks_total: int
    def __init__(self, core_worker_stats: _Optional[_Union[_common_pb2.CoreWorkerStats, _Mapping]] = ..., owned_task_info_entries: _Optional[_Iterable[_Union[_common_pb2.TaskInfoEntry, _Mapping]]] = ..., running_task_ids: _Optional[_Iterable[bytes]] = ..., tasks_total: _Optional[int] = ...) -> None: ...

class LocalGCRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LocalGCReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SpillObjectsRequest(_message.Message):
    __slots__ = ("object_refs_to_spill",)
    OBJECT_REFS_TO_SPILL_FIELD_NUMBER: _ClassVar[int]
    object_refs_to_spill: _containers.RepeatedCompositeFieldContainer[_common_pb2.ObjectReference]
    def __init__(self, object_refs_to_spill: _Optional[_Iterable[_Union[_common_pb2.ObjectReference, _Mapping]]] = ...) -> None: ...

class SpillObjectsReply(_message.Message):
    __slots__ = ("spilled_objects_url",)
    SPILLED_OBJECTS_URL_FIELD_NUMBER: _ClassVar[int]
    spilled_objects_url: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, spilled_objects_url: _Optional[_Iterable[str]] = ...) -> None: ...

class RestoreSpilledObjectsRequest(_message.Message):
    __slots__ = ("spilled_objects_url", "object_ids_to_restore")
    SPILLED_OBJECTS_URL_FIELD_NUMBER: _ClassVar[int]
    OBJECT_IDS_TO_RESTORE_FIELD_NUMBER: _ClassVar[int]
    spilled_objects_url: _containers.RepeatedScalarFieldContainer[str]
    object_ids_to_restore: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, spilled_objects_url: _Optional[_Iterable[str]] = ..., object_ids_to_restore: _Optional[_Iterable[bytes]] = ...) -> None: ...

class RestoreSpilledObjectsReply(_message.Message):
    __slots__ = ("bytes_restored_total",)
    BYTES_RESTORED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    bytes_restored_total: int
    def __init__(self, bytes_restored_total: _Optional[int] = ...) -> None: ...

class DeleteSpilledObjectsRequest(_message.Message):
    __slots__ = ("spilled_objects_url",)
    SPILLED_OBJECTS_URL_FIELD_NUMBER: _ClassVar[int]
    spilled_objects_url: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, spilled_objects_url: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteSpilledObjectsReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PlasmaObjectReadyRequest(_message.Message):
    __slots__ = ("object_id",)
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    object_id: bytes
    def __init__(self, object_id: _Optional[bytes] = ...) -> None: ...

class PlasmaObjectReadyReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExitRequest(_message.Message):
    __slots__ = ("force_exit",)
    FORCE_EXIT_FIELD_NUMBER: _ClassVar[int]
    force_exit: bool
    def __init__(self, force_exit: _Optional[bool] = ...) -> None: ...

class ExitReply(_message.Message):
    __slots__ = ("success",)
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    def __init__(self, success: _Optional[bool] = ...) -> None: ...

class RegisterMutableObjectReaderRequest(_message.Message):
    __slots__ = ("writer_object_id", "num_readers", "reader_object_id")
    WRITER_OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_READERS_FIELD_NUMBER: _ClassVar[int]
    READER_OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    writer_object_id: bytes
    num_readers: int
    reader_object_id: bytes
    def __init__(self, writer_object_id: _Optional[bytes] = ..., num_readers: _Optional[int] = ..., reader_object_id: _Optional[bytes] = ...) -> None: ...

class RegisterMutableObjectReaderReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ActorHandle(_message.Message):
    __slots__ = ("actor_id", "owner_id", "owner_address", "creation_job_id", "actor_language", "actor_creation_task_function_descriptor", "actor_cursor", "extension_data", "max_task_retries", "name", "ray_namespace", "allow_out_of_order_execution", "max_pending_calls", "enable_task_events", "labels", "enable_tensor_transport", "is_detached", "actor_generator_backpressure_num_objects")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CREATION_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_CREATION_TASK_FUNCTION_DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    ACTOR_CURSOR_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_DATA_FIELD_NUMBER: _ClassVar[int]
    MAX_TASK_RETRIES_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RAY_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_OUT_OF_ORDER_EXECUTION_FIELD_NUMBER: _ClassVar[int]
    MAX_PENDING_CALLS_FIELD_NUMBER: _ClassVar[int]
    ENABLE_TASK_EVENTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ENABLE_TENSOR_TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    IS_DETACHED_FIELD_NUMBER: _ClassVar[int]
    ACTOR_GENERATOR_BACKPRESSURE_NUM_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    actor_id: bytes
    owner_id: bytes
    owner_address: _common_pb2.Address
    creation_job_id: bytes
    actor_language: _common_pb2.Language
    actor_creation_task_function_descriptor: _common_pb2.FunctionDescriptor
    actor_cursor: bytes
    extension_data: bytes
    max_task_retries: int
    name: str
    ray_namespace: str
    allow_out_of_order_execution: bool
    max_pending_calls: int
    enable_task_events: bool
    labels: _containers.ScalarMap[str, str]
    enable_tensor_transport: bool
    is_detached: bool
    actor_generator_backpressure_num_objects: int
    def __init__(self, actor_id: _Optional[bytes] = ..., owner_id: _Optional[bytes] = ..., owner_address: _Optional[_Union[_common_pb2.Address, _Mapping]] = ..., creation_job_id: _Optional[bytes] = ..., actor_language: _Optional[_Union[_common_pb2.Language, str]] = ..., actor_creation_task_function_descriptor: _Optional[_Union[_common_pb2.FunctionDescriptor, _Mapping]] = ..., actor_cursor: _Optional[bytes] = ..., extension_data: _Optional[bytes] = ..., max_task_retries: _Optional[int] = ..., name: _Optional[str] = ..., ray_namespace: _Optional[str] = ..., allow_out_of_order_execution: _Optional[bool] = ..., max_pending_calls: _Optional[int] = ..., enable_task_events: _Optional[bool] = ..., labels: _Optional[_Mapping[str, str]] = ..., enable_tensor_transport: _Optional[bool] = ..., is_detached: _Optional[bool] = ..., actor_generator_backpressure_num_objects: _Optional[int] = ...) -> None: ...

class ActiveObjectIDs(_message.Message):
    __slots__ = ("object_ids",)
    OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    object_ids: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, object_ids: _Optional[_Iterable[bytes]] = ...) -> None: ...
