from gcs_ha.proto.ray import runtime_env_pb2 as _runtime_env_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Language(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PYTHON: _ClassVar[Language]
    JAVA: _ClassVar[Language]
    CPP: _ClassVar[Language]

class WorkerType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER: _ClassVar[WorkerType]
    DRIVER: _ClassVar[WorkerType]
    SPILL_WORKER: _ClassVar[WorkerType]
    RESTORE_WORKER: _ClassVar[WorkerType]

class WorkerExitType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYSTEM_ERROR: _ClassVar[WorkerExitType]
    INTENDED_SYSTEM_EXIT: _ClassVar[WorkerExitType]
    USER_ERROR: _ClassVar[WorkerExitType]
    INTENDED_USER_EXIT: _ClassVar[WorkerExitType]
    NODE_OUT_OF_MEMORY: _ClassVar[WorkerExitType]

class TaskType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NORMAL_TASK: _ClassVar[TaskType]
    ACTOR_CREATION_TASK: _ClassVar[TaskType]
    ACTOR_TASK: _ClassVar[TaskType]
    DRIVER_TASK: _ClassVar[TaskType]

class LabelSelectorOperator(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LABEL_OPERATOR_UNSPECIFIED: _ClassVar[LabelSelectorOperator]
    LABEL_OPERATOR_IN: _ClassVar[LabelSelectorOperator]
    LABEL_OPERATOR_NOT_IN: _ClassVar[LabelSelectorOperator]

class PlacementStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PACK: _ClassVar[PlacementStrategy]
    SPREAD: _ClassVar[PlacementStrategy]
    STRICT_PACK: _ClassVar[PlacementStrategy]
    STRICT_SPREAD: _ClassVar[PlacementStrategy]

class ErrorType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_DIED: _ClassVar[ErrorType]
    ACTOR_DIED: _ClassVar[ErrorType]
    TASK_EXECUTION_EXCEPTION: _ClassVar[ErrorType]
    OBJECT_IN_PLASMA: _ClassVar[ErrorType]
    TASK_CANCELLED: _ClassVar[ErrorType]
    ACTOR_CREATION_FAILED: _ClassVar[ErrorType]
    RUNTIME_ENV_SETUP_FAILED: _ClassVar[ErrorType]
    OBJECT_LOST: _ClassVar[ErrorType]
    OWNER_DIED: _ClassVar[ErrorType]
    OBJECT_DELETED: _ClassVar[ErrorType]
    DEPENDENCY_RESOLUTION_FAILED: _ClassVar[ErrorType]
    OBJECT_UNRECONSTRUCTABLE_MAX_ATTEMPTS_EXCEEDED: _ClassVar[ErrorType]
    OBJECT_UNRECONSTRUCTABLE_LINEAGE_EVICTED: _ClassVar[ErrorType]
    OBJECT_FETCH_TIMED_OUT: _ClassVar[ErrorType]
    LOCAL_RAYLET_DIED: _ClassVar[ErrorType]
    TASK_PLACEMENT_GROUP_REMOVED: _ClassVar[ErrorType]
    ACTOR_PLACEMENT_GROUP_REMOVED: _ClassVar[ErrorType]
    TASK_UNSCHEDULABLE_ERROR: _ClassVar[ErrorType]
    ACTOR_UNSCHEDULABLE_ERROR: _ClassVar[ErrorType]
    OUT_OF_DISK_ERROR: _ClassVar[ErrorType]
    OBJECT_FREED: _ClassVar[ErrorType]
    OUT_OF_MEMORY: _ClassVar[ErrorType]
    NODE_DIED: _ClassVar[ErrorType]
    END_OF_STREAMING_GENERATOR: _ClassVar[ErrorType]
    ACTOR_UNAVAILABLE: _ClassVar[ErrorType]
    GENERATOR_TASK_FAILED_FOR_OBJECT_RECONSTRUCTION: _ClassVar[ErrorType]
    OBJECT_UNRECONSTRUCTABLE_PUT: _ClassVar[ErrorType]
    OBJECT_UNRECONSTRUCTABLE_RETRIES_DISABLED: _ClassVar[ErrorType]
    OBJECT_UNRECONSTRUCTABLE_BORROWED: _ClassVar[ErrorType]
    OBJECT_UNRECONSTRUCTABLE_REF_NOT_FOUND: _ClassVar[ErrorType]
    OBJECT_UNRECONSTRUCTABLE_TASK_CANCELLED: _ClassVar[ErrorType]
    OBJECT_UNRECONSTRUCTABLE_LINEAGE_DISABLED: _ClassVar[ErrorType]
    WORKER_STARTUP_FAILED: _ClassVar[ErrorType]
    STREAMING_GENERATOR_REPLAY_INCONSISTENT: _ClassVar[ErrorType]

class TaskStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NIL: _ClassVar[TaskStatus]
    PENDING_ARGS_AVAIL: _ClassVar[TaskStatus]
    PENDING_NODE_ASSIGNMENT: _ClassVar[TaskStatus]
    PENDING_OBJ_STORE_MEM_AVAIL: _ClassVar[TaskStatus]
    PENDING_ARGS_FETCH: _ClassVar[TaskStatus]
    SUBMITTED_TO_WORKER: _ClassVar[TaskStatus]
    PENDING_ACTOR_TASK_ARGS_FETCH: _ClassVar[TaskStatus]
    PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY: _ClassVar[TaskStatus]
    RUNNING: _ClassVar[TaskStatus]
    RUNNING_IN_RAY_GET: _ClassVar[TaskStatus]
    RUNNING_IN_RAY_WAIT: _ClassVar[TaskStatus]
    FINISHED: _ClassVar[TaskStatus]
    FAILED: _ClassVar[TaskStatus]
    GETTING_AND_PINNING_ARGS: _ClassVar[TaskStatus]
PYTHON: Language
JAVA: Language
CPP: Language
WORKER: WorkerType
DRIVER: WorkerType
SPILL_WORKER: WorkerType
RESTORE_WORKER: WorkerType
SYSTEM_ERROR: WorkerExitType
INTENDED_SYSTEM_EXIT: WorkerExitType
USER_ERROR: WorkerExitType
INTENDED_USER_EXIT: WorkerExitType
NODE_OUT_OF_MEMORY: WorkerExitType
NORMAL_TASK: TaskType
ACTOR_CREATION_TASK: TaskType
ACTOR_TASK: TaskType
DRIVER_TASK: TaskType
LABEL_OPERATOR_UNSPECIFIED: LabelSelectorOperator
LABEL_OPERATOR_IN: LabelSelectorOperator
LABEL_OPERATOR_NOT_IN: LabelSelectorOperator
PACK: PlacementStrategy
SPREAD: PlacementStrategy
STRICT_PACK: PlacementStrategy
STRICT_SPREAD: PlacementStrategy
WORKER_DIED: ErrorType
ACTOR_DIED: ErrorType
TASK_EXECUTION_EXCEPTION: ErrorType
OBJECT_IN_PLASMA: ErrorType
TASK_CANCELLED: ErrorType
ACTOR_CREATION_FAILED: ErrorType
RUNTIME_ENV_SETUP_FAILED: ErrorType
OBJECT_LOST: ErrorType
OWNER_DIED: ErrorType
OBJECT_DELETED: ErrorType
DEPENDENCY_RESOLUTION_FAILED: ErrorType
OBJECT_UNRECONSTRUCTABLE_MAX_ATTEMPTS_EXCEEDED: ErrorType
OBJECT_UNRECONSTRUCTABLE_LINEAGE_EVICTED: ErrorType
OBJECT_FETCH_TIMED_OUT: ErrorType
LOCAL_RAYLET_DIED: ErrorType
TASK_PLACEMENT_GROUP_REMOVED: ErrorType
ACTOR_PLACEMENT_GROUP_REMOVED: ErrorType
TASK_UNSCHEDULABLE_ERROR: ErrorType
ACTOR_UNSCHEDULABLE_ERROR: ErrorType
OUT_OF_DISK_ERROR: ErrorType
OBJECT_FREED: ErrorType
OUT_OF_MEMORY: ErrorType
NODE_DIED: ErrorType
END_OF_STREAMING_GENERATOR: ErrorType
ACTOR_UNAVAILABLE: ErrorType
GENERATOR_TASK_FAILED_FOR_OBJECT_RECONSTRUCTION: ErrorType
OBJECT_UNRECONSTRUCTABLE_PUT: ErrorType
OBJECT_UNRECONSTRUCTABLE_RETRIES_DISABLED: ErrorType
OBJECT_UNRECONSTRUCTABLE_BORROWED: ErrorType
OBJECT_UNRECONSTRUCTABLE_REF_NOT_FOUND: ErrorType
OBJECT_UNRECONSTRUCTABLE_TASK_CANCELLED: ErrorType
OBJECT_UNRECONSTRUCTABLE_LINEAGE_DISABLED: ErrorType
WORKER_STARTUP_FAILED: ErrorType
STREAMING_GENERATOR_REPLAY_INCONSISTENT: ErrorType
NIL: TaskStatus
PENDING_ARGS_AVAIL: TaskStatus
PENDING_NODE_ASSIGNMENT: TaskStatus
PENDING_OBJ_STORE_MEM_AVAIL: TaskStatus
PENDING_ARGS_FETCH: TaskStatus
SUBMITTED_TO_WORKER: TaskStatus
PENDING_ACTOR_TASK_ARGS_FETCH: TaskStatus
PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY: TaskStatus
RUNNING: TaskStatus
RUNNING_IN_RAY_GET: TaskStatus
RUNNING_IN_RAY_WAIT: TaskStatus
FINISHED: TaskStatus
FAILED: TaskStatus
GETTING_AND_PINNING_ARGS: TaskStatus

class Address(_message.Message):
    __slots__ = ("node_id", "ip_address", "port", "worker_id")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    ip_address: str
    port: int
    worker_id: bytes
    def __init__(self, node_id: _Optional[bytes] = ..., ip_address: _Optional[str] = ..., port: _Optional[int] = ..., worker_id: _Optional[bytes] = ...) -> None: ...

class JobConfig(_message.Message):
    __slots__ = ("jvm_options", "code_search_path", "runtime_env_info", "ray_namespace", "metadata", "default_actor_lifetime", "py_driver_sys_path", "serialized_py_logging_config", "disable_job_level_lineage_reconstruction")
    class ActorLifetime(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        DETACHED: _ClassVar[JobConfig.ActorLifetime]
        NON_DETACHED: _ClassVar[JobConfig.ActorLifetime]
    DETACHED: JobConfig.ActorLifetime
    NON_DETACHED: JobConfig.ActorLifetime
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JVM_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CODE_SEARCH_PATH_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_ENV_INFO_FIELD_NUMBER: _ClassVar[int]
    RAY_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_ACTOR_LIFETIME_FIELD_NUMBER: _ClassVar[int]
    PY_DRIVER_SYS_PATH_FIELD_NUMBER: _ClassVar[int]
    SERIALIZED_PY_LOGGING_CONFIG_FIELD_NUMBER: _ClassVar[int]
    DISABLE_JOB_LEVEL_LINEAGE_RECONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    jvm_options: _containers.RepeatedScalarFieldContainer[str]
    code_search_path: _containers.RepeatedScalarFieldContainer[str]
    runtime_env_info: _runtime_env_pb2.RuntimeEnvInfo
    ray_namespace: str
    metadata: _containers.ScalarMap[str, str]
    default_actor_lifetime: JobConfig.ActorLifetime
    py_driver_sys_path: _containers.RepeatedScalarFieldContainer[str]
    serialized_py_logging_config: bytes
    disable_job_level_lineage_reconstruction: bool
    def __init__(self, jvm_options: _Optional[_Iterable[str]] = ..., code_search_path: _Optional[_Iterable[str]] = ..., runtime_env_info: _Optional[_Union[_runtime_env_pb2.RuntimeEnvInfo, _Mapping]] = ..., ray_namespace: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., default_actor_lifetime: _Optional[_Union[JobConfig.ActorLifetime, str]] = ..., py_driver_sys_path: _Optional[_Iterable[str]] = ..., serialized_py_logging_config: _Optional[bytes] = ..., disable_job_level_lineage_reconstruction: _Optional[bool] = ...) -> None: ...

class FunctionDescriptor(_message.Message):
    __slots__ = ("java_function_descriptor", "python_function_descriptor", "cpp_function_descriptor")
    JAVA_FUNCTION_DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    PYTHON_FUNCTION_DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    CPP_FUNCTION_DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    java_function_descriptor: JavaFunctionDescriptor
    python_function_descriptor: PythonFunctionDescriptor
    cpp_function_descriptor: CppFunctionDescriptor
    def __init__(self, java_function_descriptor: _Optional[_Union[JavaFunctionDescriptor, _Mapping]] = ..., python_function_descriptor: _Optional[_Union[PythonFunctionDescriptor, _Mapping]] = ..., cpp_function_descriptor: _Optional[_Union[CppFunctionDescriptor, _Mapping]] = ...) -> None: ...

class JavaFunctionDescriptor(_message.Message):
    __slots__ = ("class_name", "function_name", "signature")
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    class_name: str
    function_name: str
    signature: str
    def __init__(self, class_name: _Optional[str] = ..., function_name: _Optional[str] = ..., signature: _Optional[str] = ...) -> None: ...

class PythonFunctionDescriptor(_message.Message):
    __slots__ = ("module_name", "class_name", "function_name", "function_hash")
    MODULE_NAME_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_HASH_FIELD_NUMBER: _ClassVar[int]
    module_name: str
    class_name: str
    function_name: str
    function_hash: str
    def __init__(self, module_name: _Optional[str] = ..., class_name: _Optional[str] = ..., function_name: _Optional[str] = ..., function_hash: _Optional[str] = ...) -> None: ...

class CppFunctionDescriptor(_message.Message):
    __slots__ = ("function_name", "caller", "class_name")
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    function_name: str
    caller: str
    class_name: str
    def __init__(self, function_name: _Optional[str] = ..., caller: _Optional[str] = ..., class_name: _Optional[str] = ...) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ("type", "name", "language", "function_descriptor", "job_id", "task_id", "parent_task_id", "parent_counter", "caller_id", "caller_address", "args", "num_returns", "required_resources", "required_placement_resources", "actor_creation_task_spec", "actor_task_spec", "max_retries", "debugger_breakpoint", "runtime_env_info", "concurrency_group_name", "retry_exceptions", "serialized_retry_exception_allowlist", "depth", "scheduling_strategy", "attempt_number", "returns_dynamic", "dynamic_return_ids", "job_config", "submitter_task_id", "streaming_generator", "dependency_resolution_timestamp_ms", "lease_grant_timestamp_ms", "num_streaming_generator_returns", "generator_backpressure_num_objects", "enable_task_events", "root_detached_actor_id", "labels", "call_site", "label_selector", "tensor_transport", "fallback_strategy", "num_objects_per_yield")
    class RequiredResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class RequiredPlacementResourcesEntry(_message.Message):
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
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_COUNTER_FIELD_NUMBER: _ClassVar[int]
    CALLER_ID_FIELD_NUMBER: _ClassVar[int]
    CALLER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    NUM_RETURNS_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_PLACEMENT_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    ACTOR_CREATION_TASK_SPEC_FIELD_NUMBER: _ClassVar[int]
    ACTOR_TASK_SPEC_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    DEBUGGER_BREAKPOINT_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_ENV_INFO_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    RETRY_EXCEPTIONS_FIELD_NUMBER: _ClassVar[int]
    SERIALIZED_RETRY_EXCEPTION_ALLOWLIST_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    SCHEDULING_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    RETURNS_DYNAMIC_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_RETURN_IDS_FIELD_NUMBER: _ClassVar[int]
    JOB_CONFIG_FIELD_NUMBER: _ClassVar[int]
    SUBMITTER_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STREAMING_GENERATOR_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCY_RESOLUTION_TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    LEASE_GRANT_TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    NUM_STREAMING_GENERATOR_RETURNS_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_BACKPRESSURE_NUM_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    ENABLE_TASK_EVENTS_FIELD_NUMBER: _ClassVar[int]
    ROOT_DETACHED_ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CALL_SITE_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    TENSOR_TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    NUM_OBJECTS_PER_YIELD_FIELD_NUMBER: _ClassVar[int]
    type: TaskType
    name: str
    language: Language
    function_descriptor: FunctionDescriptor
    job_id: bytes
    task_id: bytes
    parent_task_id: bytes
    parent_counter: int
    caller_id: bytes
    caller_address: Address
    args: _containers.RepeatedCompositeFieldContainer[TaskArg]
    num_returns: int
    required_resources: _containers.ScalarMap[str, float]
    required_placement_resources: _containers.ScalarMap[str, float]
    actor_creation_task_spec: ActorCreationTaskSpec
    actor_task_spec: ActorTaskSpec
    max_retries: int
    debugger_breakpoint: bytes
    runtime_env_info: _runtime_env_pb2.RuntimeEnvInfo
    concurrency_group_name: str
    retry_exceptions: bool
    serialized_retry_exception_allowlist: bytes
    depth: int
    scheduling_strategy: SchedulingStrategy
    attempt_number: int
    returns_dynamic: bool
    dynamic_return_ids: _containers.RepeatedScalarFieldContainer[bytes]
    job_config: JobConfig
    submitter_task_id: bytes
    streaming_generator: bool
    dependency_resolution_timestamp_ms: int
    lease_grant_timestamp_ms: int
    num_streaming_generator_returns: int
    generator_backpressure_num_objects: int
    enable_task_events: bool
    root_detached_actor_id: bytes
    labels: _containers.ScalarMap[str, str]
    call_site: str
    label_selector: LabelSelector
    tensor_transport: str
    fallback_strategy: FallbackStrategy
    num_objects_per_yield: int
    def __init__(self, type: _Optional[_Union[TaskType, str]] = ..., name: _Optional[str] = ..., language: _Optional[_Union[Language, str]] = ..., function_descriptor: _Optional[_Union[FunctionDescriptor, _Mapping]] = ..., job_id: _Optional[bytes] = ..., task_id: _Optional[bytes] = ..., parent_task_id: _Optional[bytes] = ..., parent_counter: _Optional[int] = ..., caller_id: _Optional[bytes] = ..., caller_address: _Optional[_Union[Address, _Mapping]] = ..., args: _Optional[_Iterable[_Union[TaskArg, _Mapping]]] = ..., num_returns: _Optional[int] = ..., required_resources: _Optional[_Mapping[str, float]] = ..., required_placement_resources: _Optional[_Mapping[str, float]] = ..., actor_creation_task_spec: _Optional[_Union[ActorCreationTaskSpec, _Mapping]] = ..., actor_task_spec: _Optional[_Union[ActorTaskSpec, _Mapping]] = ..., max_retries: _Optional[int] = ..., debugger_breakpoint: _Optional[bytes] = ..., runtime_env_info: _Optional[_Union[_runtime_env_pb2.RuntimeEnvInfo, _Mapping]] = ..., concurrency_group_name: _Optional[str] = ..., retry_exceptions: _Optional[bool] = ..., serialized_retry_exception_allowlist: _Optional[bytes] = ..., depth: _Optional[int] = ..., scheduling_strategy: _Optional[_Union[SchedulingStrategy, _Mapping]] = ..., attempt_number: _Optional[int] = ..., returns_dynamic: _Optional[bool] = ..., dynamic_return_ids: _Optional[_Iterable[bytes]] = ..., job_config: _Optional[_Union[JobConfig, _Mapping]] = ..., submitter_task_id: _Optional[bytes] = ..., streaming_generator: _Optional[bool] = ..., dependency_resolution_timestamp_ms: _Optional[int] = ..., lease_grant_timestamp_ms: _Optional[int] = ..., num_streaming_generator_returns: _Optional[int] = ..., generator_backpressure_num_objects: _Optional[int] = ..., enable_task_events: _Optional[bool] = ..., root_detached_actor_id: _Optional[bytes] = ..., labels: _Optional[_Mapping[str, str]] = ..., call_site: _Optional[str] = ..., label_selector: _Optional[_Union[LabelSelector, _Mapping]] = ..., tensor_transport: _Optional[str] = ..., fallback_strategy: _Optional[_Union[FallbackStrategy, _Mapping]] = ..., num_objects_per_yield: _Optional[int] = ...) -> None: ...

class TaskArg(_message.Message):
    __slots__ = ("object_ref", "data", "metadata", "nested_inlined_refs", "is_inlined", "tensor_transport")
    OBJECT_REF_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    NESTED_INLINED_REFS_FIELD_NUMBER: _ClassVar[int]
    IS_INLINED_FIELD_NUMBER: _ClassVar[int]
    TENSOR_TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    object_ref: ObjectReference
    data: bytes
    metadata: bytes
    nested_inlined_refs: _containers.RepeatedCompositeFieldContainer[ObjectReference]
    is_inlined: bool
    tensor_transport: str
    def __init__(self, object_ref: _Optional[_Union[ObjectReference, _Mapping]] = ..., data: _Optional[bytes] = ..., metadata: _Optional[bytes] = ..., nested_inlined_refs: _Optional[_Iterable[_Union[ObjectReference, _Mapping]]] = ..., is_inlined: _Optional[bool] = ..., tensor_transport: _Optional[str] = ...) -> None: ...

class ObjectReference(_message.Message):
    __slots__ = ("object_id", "owner_address", "call_site", "tensor_transport")
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CALL_SITE_FIELD_NUMBER: _ClassVar[int]
    TENSOR_TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    object_id: bytes
    owner_address: Address
    call_site: str
    tensor_transport: str
    def __init__(self, object_id: _Optional[bytes] = ..., owner_address: _Optional[_Union[Address, _Mapping]] = ..., call_site: _Optional[str] = ..., tensor_transport: _Optional[str] = ...) -> None: ...

class ActorCreationTaskSpec(_message.Message):
    __slots__ = ("actor_id", "max_actor_restarts", "max_task_retries", "dynamic_worker_options", "max_concurrency", "is_detached", "name", "ray_namespace", "is_asyncio", "extension_data", "serialized_actor_handle", "concurrency_groups", "allow_out_of_order_execution", "max_pending_calls", "actor_generator_backpressure_num_objects")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_ACTOR_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    MAX_TASK_RETRIES_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_WORKER_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    IS_DETACHED_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RAY_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    IS_ASYNCIO_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_DATA_FIELD_NUMBER: _ClassVar[int]
    SERIALIZED_ACTOR_HANDLE_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_GROUPS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_OUT_OF_ORDER_EXECUTION_FIELD_NUMBER: _ClassVar[int]
    MAX_PENDING_CALLS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_GENERATOR_BACKPRESSURE_NUM_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    actor_id: bytes
    max_actor_restarts: int
    max_task_retries: int
    dynamic_worker_options: _containers.RepeatedScalarFieldContainer[str]
    max_concurrency: int
    is_detached: bool
    name: str
    ray_namespace: str
    is_asyncio: bool
    extension_data: str
    serialized_actor_handle: bytes
    concurrency_groups: _containers.RepeatedCompositeFieldContainer[ConcurrencyGroup]
    allow_out_of_order_execution: bool
    max_pending_calls: int
    actor_generator_backpressure_num_objects: int
    def __init__(self, actor_id: _Optional[bytes] = ..., max_actor_restarts: _Optional[int] = ..., max_task_retries: _Optional[int] = ..., dynamic_worker_options: _Optional[_Iterable[str]] = ..., max_concurrency: _Optional[int] = ..., is_detached: _Optional[bool] = ..., name: _Optional[str] = ..., ray_namespace: _Optional[str] = ..., is_asyncio: _Optional[bool] = ..., extension_data: _Optional[str] = ..., serialized_actor_handle: _Optional[bytes] = ..., concurrency_groups: _Optional[_Iterable[_Union[ConcurrencyGroup, _Mapping]]] = ..., allow_out_of_order_execution: _Optional[bool] = ..., max_pending_calls: _Optional[int] = ..., actor_generator_backpressure_num_objects: _Optional[int] = ...) -> None: ...

class ConcurrencyGroup(_message.Message):
    __slots__ = ("name", "max_concurrency", "function_descriptors")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_DESCRIPTORS_FIELD_NUMBER: _ClassVar[int]
    name: str
    max_concurrency: int
    function_descriptors: _containers.RepeatedCompositeFieldContainer[FunctionDescriptor]
    def __init__(self, name: _Optional[str] = ..., max_concurrency: _Optional[int] = ..., function_descriptors: _Optional[_Iterable[_Union[FunctionDescriptor, _Mapping]]] = ...) -> None: ...

class ActorTaskSpec(_message.Message):
    __slots__ = ("actor_id", "actor_creation_dummy_object_id", "concurrency_group_sequence_number", "is_detached_actor", "actor_generator_backpressure_num_objects")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_CREATION_DUMMY_OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_GROUP_SEQUENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    IS_DETACHED_ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTOR_GENERATOR_BACKPRESSURE_NUM_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    actor_id: bytes
    actor_creation_dummy_object_id: bytes
    concurrency_group_sequence_number: int
    is_detached_actor: bool
    actor_generator_backpressure_num_objects: int
    def __init__(self, actor_id: _Optional[bytes] = ..., actor_creation_dummy_object_id: _Optional[bytes] = ..., concurrency_group_sequence_number: _Optional[int] = ..., is_detached_actor: _Optional[bool] = ..., actor_generator_backpressure_num_objects: _Optional[int] = ...) -> None: ...

class SchedulingStrategy(_message.Message):
    __slots__ = ("default_scheduling_strategy", "placement_group_scheduling_strategy", "spread_scheduling_strategy", "node_affinity_scheduling_strategy", "node_label_scheduling_strategy")
    DEFAULT_SCHEDULING_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_GROUP_SCHEDULING_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    SPREAD_SCHEDULING_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    NODE_AFFINITY_SCHEDULING_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    NODE_LABEL_SCHEDULING_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    default_scheduling_strategy: DefaultSchedulingStrategy
    placement_group_scheduling_strategy: PlacementGroupSchedulingStrategy
    spread_scheduling_strategy: SpreadSchedulingStrategy
    node_affinity_scheduling_strategy: NodeAffinitySchedulingStrategy
    node_label_scheduling_strategy: NodeLabelSchedulingStrategy
    def __init__(self, default_scheduling_strategy: _Optional[_Union[DefaultSchedulingStrategy, _Mapping]] = ..., placement_group_scheduling_strategy: _Optional[_Union[PlacementGroupSchedulingStrategy, _Mapping]] = ..., spread_scheduling_strategy: _Optional[_Union[SpreadSchedulingStrategy, _Mapping]] = ..., node_affinity_scheduling_strategy: _Optional[_Union[NodeAffinitySchedulingStrategy, _Mapping]] = ..., node_label_scheduling_strategy: _Optional[_Union[NodeLabelSchedulingStrategy, _Mapping]] = ...) -> None: ...

class DefaultSchedulingStrategy(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PlacementGroupSchedulingStrategy(_message.Message):
    __slots__ = ("placement_group_id", "placement_group_bundle_index", "placement_group_capture_child_tasks")
    PLACEMENT_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_GROUP_BUNDLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_GROUP_CAPTURE_CHILD_TASKS_FIELD_NUMBER: _ClassVar[int]
    placement_group_id: bytes
    placement_group_bundle_index: int
    placement_group_capture_child_tasks: bool
    def __init__(self, placement_group_id: _Optional[bytes] = ..., placement_group_bundle_index: _Optional[int] = ..., placement_group_capture_child_tasks: _Optional[bool] = ...) -> None: ...

class SpreadSchedulingStrategy(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeAffinitySchedulingStrategy(_message.Message):
    __slots__ = ("node_id", "soft", "spill_on_unavailable", "fail_on_unavailable")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SOFT_FIELD_NUMBER: _ClassVar[int]
    SPILL_ON_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    FAIL_ON_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    soft: bool
    spill_on_unavailable: bool
    fail_on_unavailable: bool
    def __init__(self, node_id: _Optional[bytes] = ..., soft: _Optional[bool] = ..., spill_on_unavailable: _Optional[bool] = ..., fail_on_unavailable: _Optional[bool] = ...) -> None: ...

class NodeLabelSchedulingStrategy(_message.Message):
    __slots__ = ("hard", "soft")
    HARD_FIELD_NUMBER: _ClassVar[int]
    SOFT_FIELD_NUMBER: _ClassVar[int]
    hard: LabelMatchExpressions
    soft: LabelMatchExpressions
    def __init__(self, hard: _Optional[_Union[LabelMatchExpressions, _Mapping]] = ..., soft: _Optional[_Union[LabelMatchExpressions, _Mapping]] = ...) -> None: ...

class LabelMatchExpressions(_message.Message):
    __slots__ = ("expressions",)
    EXPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    expressions: _containers.RepeatedCompositeFieldContainer[LabelMatchExpression]
    def __init__(self, expressions: _Optional[_Iterable[_Union[LabelMatchExpression, _Mapping]]] = ...) -> None: ...

class LabelMatchExpression(_message.Message):
    __slots__ = ("key", "operator")
    KEY_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    key: str
    operator: LabelOperator
    def __init__(self, key: _Optional[str] = ..., operator: _Optional[_Union[LabelOperator, _Mapping]] = ...) -> None: ...

class LabelOperator(_message.Message):
    __slots__ = ("label_in", "label_not_in", "label_exists", "label_does_not_exist")
    LABEL_IN_FIELD_NUMBER: _ClassVar[int]
    LABEL_NOT_IN_FIELD_NUMBER: _ClassVar[int]
    LABEL_EXISTS_FIELD_NUMBER: _ClassVar[int]
    LABEL_DOES_NOT_EXIST_FIELD_NUMBER: _ClassVar[int]
    label_in: LabelIn
    label_not_in: LabelNotIn
    label_exists: LabelExists
    label_does_not_exist: LabelDoesNotExist
    def __init__(self, label_in: _Optional[_Union[LabelIn, _Mapping]] = ..., label_not_in: _Optional[_Union[LabelNotIn, _Mapping]] = ..., label_exists: _Optional[_Union[LabelExists, _Mapping]] = ..., label_does_not_exist: _Optional[_Union[LabelDoesNotExist, _Mapping]] = ...) -> None: ...

class LabelIn(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class LabelNotIn(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class LabelExists(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LabelDoesNotExist(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LabelSelector(_message.Message):
    __slots__ = ("label_constraints",)
    LABEL_CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    label_constraints: _containers.RepeatedCompositeFieldContainer[LabelSelectorConstraint]
    def __init__(self, label_constraints: _Optional[_Iterable[_Union[LabelSelectorConstraint, _Mapping]]] = ...) -> None: ...

class LabelSelectorConstraint(_message.Message):
    __slots__ = ("label_key", "operator", "label_values")
    LABEL_KEY_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    LABEL_VALUES_FIELD_NUMBER: _ClassVar[int]
    label_key: str
    operator: LabelSelectorOperator
    label_values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, label_key: _Optional[str] = ..., operator: _Optional[_Union[LabelSelectorOperator, str]] = ..., label_values: _Optional[_Iterable[str]] = ...) -> None: ...

class FallbackStrategy(_message.Message):
    __slots__ = ("options",)
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    options: _containers.RepeatedCompositeFieldContainer[FallbackOption]
    def __init__(self, options: _Optional[_Iterable[_Union[FallbackOption, _Mapping]]] = ...) -> None: ...

class FallbackOption(_message.Message):
    __slots__ = ("label_selector",)
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    label_selector: LabelSelector
    def __init__(self, label_selector: _Optional[_Union[LabelSelector, _Mapping]] = ...) -> None: ...

class Bundle(_message.Message):
    __slots__ = ("bundle_id", "unit_resources", "node_id", "label_selector")
    class BundleIdentifier(_message.Message):
        __slots__ = ("placement_group_id", "bundle_index")
        PLACEMENT_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
        BUNDLE_INDEX_FIELD_NUMBER: _ClassVar[int]
        placement_group_id: bytes
        bundle_index: int
        def __init__(self, placement_group_id: _Optional[bytes] = ..., bundle_index: _Optional[int] = ...) -> None: ...
    class UnitResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class LabelSelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    UNIT_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    bundle_id: Bundle.BundleIdentifier
    unit_resources: _containers.ScalarMap[str, float]
    node_id: bytes
    label_selector: _containers.ScalarMap[str, str]
    def __init__(self, bundle_id: _Optional[_Union[Bundle.BundleIdentifier, _Mapping]] = ..., unit_resources: _Optional[_Mapping[str, float]] = ..., node_id: _Optional[bytes] = ..., label_selector: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ResourceMapEntry(_message.Message):
    __slots__ = ("name", "resource_ids")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_IDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    resource_ids: _containers.RepeatedCompositeFieldContainer[ResourceId]
    def __init__(self, name: _Optional[str] = ..., resource_ids: _Optional[_Iterable[_Union[ResourceId, _Mapping]]] = ...) -> None: ...

class ResourceId(_message.Message):
    __slots__ = ("index", "quantity")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    index: int
    quantity: float
    def __init__(self, index: _Optional[int] = ..., quantity: _Optional[float] = ...) -> None: ...

class NodeResourceUsage(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class ActorDeathCause(_message.Message):
    __slots__ = ("creation_task_failure_context", "runtime_env_failed_context", "actor_died_error_context", "actor_unschedulable_context", "oom_context")
    CREATION_TASK_FAILURE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_ENV_FAILED_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_DIED_ERROR_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_UNSCHEDULABLE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    OOM_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    creation_task_failure_context: RayException
    runtime_env_failed_context: RuntimeEnvFailedContext
    actor_died_error_context: ActorDiedErrorContext
    actor_unschedulable_context: ActorUnschedulableContext
    oom_context: OomContext
    def __init__(self, creation_task_failure_context: _Optional[_Union[RayException, _Mapping]] = ..., runtime_env_failed_context: _Optional[_Union[RuntimeEnvFailedContext, _Mapping]] = ..., actor_died_error_context: _Optional[_Union[ActorDiedErrorContext, _Mapping]] = ..., actor_unschedulable_context: _Optional[_Union[ActorUnschedulableContext, _Mapping]] = ..., oom_context: _Optional[_Union[OomContext, _Mapping]] = ...) -> None: ...

class RayException(_message.Message):
    __slots__ = ("language", "serialized_exception", "formatted_exception_string")
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    SERIALIZED_EXCEPTION_FIELD_NUMBER: _ClassVar[int]
    FORMATTED_EXCEPTION_STRING_FIELD_NUMBER: _ClassVar[int]
    language: Language
    serialized_exception: bytes
    formatted_exception_string: str
    def __init__(self, language: _Optional[_Union[Language, str]] = ..., serialized_exception: _Optional[bytes] = ..., formatted_exception_string: _Optional[str] = ...) -> None: ...

class RuntimeEnvFailedContext(_message.Message):
    __slots__ = ("error_message",)
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    error_message: str
    def __init__(self, error_message: _Optional[str] = ...) -> None: ...

class ActorDiedErrorContext(_message.Message):
    __slots__ = ("error_message", "owner_id", "owner_ip_address", "node_ip_address", "pid", "name", "ray_namespace", "class_name", "actor_id", "never_started", "node_death_info", "reason")
    class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNSPECIFIED: _ClassVar[ActorDiedErrorContext.Reason]
        WORKER_DIED: _ClassVar[ActorDiedErrorContext.Reason]
        OWNER_DIED: _ClassVar[ActorDiedErrorContext.Reason]
        NODE_DIED: _ClassVar[ActorDiedErrorContext.Reason]
        RAY_KILL: _ClassVar[ActorDiedErrorContext.Reason]
        OUT_OF_SCOPE: _ClassVar[ActorDiedErrorContext.Reason]
        REF_DELETED: _ClassVar[ActorDiedErrorContext.Reason]
    UNSPECIFIED: ActorDiedErrorContext.Reason
    WORKER_DIED: ActorDiedErrorContext.Reason
    OWNER_DIED: ActorDiedErrorContext.Reason
    NODE_DIED: ActorDiedErrorContext.Reason
    RAY_KILL: ActorDiedErrorContext.Reason
    OUT_OF_SCOPE: ActorDiedErrorContext.Reason
    REF_DELETED: ActorDiedErrorContext.Reason
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NODE_IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RAY_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    NEVER_STARTED_FIELD_NUMBER: _ClassVar[int]
    NODE_DEATH_INFO_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    error_message: str
    owner_id: bytes
    owner_ip_address: str
    node_ip_address: str
    pid: int
    name: str
    ray_namespace: str
    class_name: str
    actor_id: bytes
    never_started: bool
    node_death_info: NodeDeathInfo
    reason: ActorDiedErrorContext.Reason
    def __init__(self, error_message: _Optional[str] = ..., owner_id: _Optional[bytes] = ..., owner_ip_address: _Optional[str] = ..., node_ip_address: _Optional[str] = ..., pid: _Optional[int] = ..., name: _Optional[str] = ..., ray_namespace: _Optional[str] = ..., class_name: _Optional[str] = ..., actor_id: _Optional[bytes] = ..., never_started: _Optional[bool] = ..., node_death_info: _Optional[_Union[NodeDeathInfo, _Mapping]] = ..., reason: _Optional[_Union[ActorDiedErrorContext.Reason, str]] = ...) -> None: ...

class NodeDeathInfo(_message.Message):
    __slots__ = ("reason", "reason_message")
    class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNSPECIFIED: _ClassVar[NodeDeathInfo.Reason]
        EXPECTED_TERMINATION: _ClassVar[NodeDeathInfo.Reason]
        UNEXPECTED_TERMINATION: _ClassVar[NodeDeathInfo.Reason]
        AUTOSCALER_DRAIN_PREEMPTED: _ClassVar[NodeDeathInfo.Reason]
        AUTOSCALER_DRAIN_IDLE: _ClassVar[NodeDeathInfo.Reason]
    UNSPECIFIED: NodeDeathInfo.Reason
    EXPECTED_TERMINATION: NodeDeathInfo.Reason
    UNEXPECTED_TERMINATION: NodeDeathInfo.Reason
    AUTOSCALER_DRAIN_PREEMPTED: NodeDeathInfo.Reason
    AUTOSCALER_DRAIN_IDLE: NodeDeathInfo.Reason
    REASON_FIELD_NUMBER: _ClassVar[int]
    REASON_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    reason: NodeDeathInfo.Reason
    reason_message: str
    def __init__(self, reason: _Optional[_Union[NodeDeathInfo.Reason, str]] = ..., reason_message: _Optional[str] = ...) -> None: ...

class ActorUnschedulableContext(_message.Message):
    __slots__ = ("error_message",)
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    error_message: str
    def __init__(self, error_message: _Optional[str] = ...) -> None: ...

class OomContext(_message.Message):
    __slots__ = ("error_message", "fail_immediately")
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FAIL_IMMEDIATELY_FIELD_NUMBER: _ClassVar[int]
    error_message: str
    fail_immediately: bool
    def __init__(self, error_message: _Optional[str] = ..., fail_immediately: _Optional[bool] = ...) -> None: ...

class ActorUnavailableContext(_message.Message):
    __slots__ = ("actor_id",)
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    actor_id: bytes
    def __init__(self, actor_id: _Optional[bytes] = ...) -> None: ...

class RayErrorInfo(_message.Message):
    __slots__ = ("actor_died_error", "runtime_env_setup_failed_error", "actor_unavailable_error", "error_message", "error_type")
    ACTOR_DIED_ERROR_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_ENV_SETUP_FAILED_ERROR_FIELD_NUMBER: _ClassVar[int]
    ACTOR_UNAVAILABLE_ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    actor_died_error: ActorDeathCause
    runtime_env_setup_failed_error: RuntimeEnvFailedContext
    actor_unavailable_error: ActorUnavailableContext
    error_message: str
    error_type: ErrorType
    def __init__(self, actor_died_error: _Optional[_Union[ActorDeathCause, _Mapping]] = ..., runtime_env_setup_failed_error: _Optional[_Union[RuntimeEnvFailedContext, _Mapping]] = ..., actor_unavailable_error: _Optional[_Union[ActorUnavailableContext, _Mapping]] = ..., error_message: _Optional[str] = ..., error_type: _Optional[_Union[ErrorType, str]] = ...) -> None: ...

class TaskInfoEntry(_message.Message):
    __slots__ = ("type", "name", "language", "func_or_class_name", "scheduling_state", "job_id", "task_id", "parent_task_id", "required_resources", "runtime_env_info", "node_id", "actor_id", "placement_group_id", "call_site", "label_selector", "fallback_strategy", "is_detached_actor")
    class RequiredResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class LabelSelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    FUNC_OR_CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    SCHEDULING_STATE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_ENV_INFO_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_SITE_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    IS_DETACHED_ACTOR_FIELD_NUMBER: _ClassVar[int]
    type: TaskType
    name: str
    language: Language
    func_or_class_name: str
    scheduling_state: TaskStatus
    job_id: bytes
    task_id: bytes
    parent_task_id: bytes
    required_resources: _containers.ScalarMap[str, float]
    runtime_env_info: _runtime_env_pb2.RuntimeEnvInfo
    node_id: bytes
    actor_id: bytes
    placement_group_id: bytes
    call_site: str
    label_selector: _containers.ScalarMap[str, str]
    fallback_strategy: FallbackStrategy
    is_detached_actor: bool
    def __init__(self, type: _Optional[_Union[TaskType, str]] = ..., name: _Optional[str] = ..., language: _Optional[_Union[Language, str]] = ..., func_or_class_name: _Optional[str] = ..., scheduling_state: _Optional[_Union[TaskStatus, str]] = ..., job_id: _Optional[bytes] = ..., task_id: _Optional[bytes] = ..., parent_task_id: _Optional[bytes] = ..., required_resources: _Optional[_Mapping[str, float]] = ..., runtime_env_info: _Optional[_Union[_runtime_env_pb2.RuntimeEnvInfo, _Mapping]] = ..., node_id: _Optional[bytes] = ..., actor_id: _Optional[bytes] = ..., placement_group_id: _Optional[bytes] = ..., call_site: _Optional[str] = ..., label_selector: _Optional[_Mapping[str, str]] = ..., fallback_strategy: _Optional[_Union[FallbackStrategy, _Mapping]] = ..., is_detached_actor: _Optional[bool] = ...) -> None: ...

class TaskAttempt(_message.Message):
    __slots__ = ("task_id", "attempt_number")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    attempt_number: int
    def __init__(self, task_id: _Optional[bytes] = ..., attempt_number: _Optional[int] = ...) -> None: ...
