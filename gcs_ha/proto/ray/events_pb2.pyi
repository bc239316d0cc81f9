import datetime

from gcs_ha.proto.ray import common_pb2 as _common_pb2
from gcs_ha.proto.ray import profile_events_pb2 as _profile_events_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AddEventsRequest(_message.Message):
    __slots__ = ("events_data",)
    EVENTS_DATA_FIELD_NUMBER: _ClassVar[int]
    events_data: RayEventsData
    def __init__(self, events_data: _Optional[_Union[RayEventsData, _Mapping]] = ...) -> None: ...

class RayEventsData(_message.Message):
    __slots__ = ("events", "task_events_metadata")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    TASK_EVENTS_METADATA_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[RayEvent]
    task_events_metadata: TaskEventsMetadata
    def __init__(self, events: _Optional[_Iterable[_Union[RayEvent, _Mapping]]] = ..., task_events_metadata: _Optional[_Union[TaskEventsMetadata, _Mapping]] = ...) -> None: ...

class RayEvent(_message.Message):
    __slots__ = ("event_id", "source_type", "event_type", "timestamp", "severity", "message", "session_name", "task_definition_event", "task_lifecycle_event", "actor_task_definition_event", "task_profile_events", "driver_job_definition_event", "driver_job_lifecycle_event", "node_definition_event", "node_lifecycle_event", "actor_definition_event", "actor_lifecycle_event", "node_id", "placement_group_definition_event", "placement_group_lifecycle_event", "submission_job_definition_event", "submission_job_lifecycle_event", "platform_event", "worker_lifecycle_event", "worker_definition_event")
    class SourceType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SOURCE_TYPE_UNSPECIFIED: _ClassVar[RayEvent.SourceType]
        CORE_WORKER: _ClassVar[RayEvent.SourceType]
        GCS: _ClassVar[RayEvent.SourceType]
        RAYLET: _ClassVar[RayEvent.SourceType]
        CLUSTER_LIFECYCLE: _ClassVar[RayEvent.SourceType]
        AUTOSCALER: _ClassVar[RayEvent.SourceType]
        JOBS: _ClassVar[RayEvent.SourceType]
    SOURCE_TYPE_UNSPECIFIED: RayEvent.SourceType
    CORE_WORKER: RayEvent.SourceType
    GCS: RayEvent.SourceType
    RAYLET: RayEvent.SourceType
    CLUSTER_LIFECYCLE: RayEvent.SourceType
    AUTOSCALER: RayEvent.SourceType
    JOBS: RayEvent.SourceType
    class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        EVENT_TYPE_UNSPECIFIED: _ClassVar[RayEvent.EventType]
        TASK_DEFINITION_EVENT: _ClassVar[RayEvent.EventType]
        TASK_LIFECYCLE_EVENT: _ClassVar[RayEvent.EventType]
        ACTOR_TASK_DEFINITION_EVENT: _ClassVar[RayEvent.EventType]
        TASK_PROFILE_EVENT: _ClassVar[RayEvent.EventType]
        DRIVER_JOB_DEFINITION_EVENT: _ClassVar[RayEvent.EventType]
        DRIVER_JOB_LIFECYCLE_EVENT: _ClassVar[RayEvent.EventType]
        NODE_DEFINITION_EVENT: _ClassVar[RayEvent.EventType]
        NODE_LIFECYCLE_EVENT: _ClassVar[RayEvent.EventType]
        ACTOR_DEFINITION_EVENT: _ClassVar[RayEvent.EventType]
        ACTOR_LIFECYCLE_EVENT: _ClassVar[RayEvent.EventType]
        PLACEMENT_GROUP_DEFINITION_EVENT: _ClassVar[RayEvent.EventType]
        PLACEMENT_GROUP_LIFECYCLE_EVENT: _ClassVar[RayEvent.EventType]
        SUBMISSION_JOB_DEFINITION_EVENT: _ClassVar[RayEvent.EventType]
        SUBMISSION_JOB_LIFECYCLE_EVENT: _ClassVar[RayEvent.EventType]
        PLATFORM_EVENT: _ClassVar[RayEvent.EventType]
        WORKER_LIFECYCLE_EVENT: _ClassVar[RayEvent.EventType]
        WORKER_DEFINITION_EVENT: _ClassVar[RayEvent.EventType]
    EVENT_TYPE_UNSPECIFIED: RayEvent.EventType
    TASK_DEFINITION_EVENT: RayEvent.EventType
    TASK_LIFECYCLE_EVENT: RayEvent.EventType
    ACTOR_TASK_DEFINITION_EVENT: RayEvent.EventType
    TASK_PROFILE_EVENT: RayEvent.EventType
    DRIVER_JOB_DEFINITION_EVENT: RayEvent.EventType
    DRIVER_JOB_LIFECYCLE_EVENT: RayEvent.EventType
    NODE_DEFINITION_EVENT: RayEvent.EventType
    NODE_LIFECYCLE_EVENT: RayEvent.EventType
    ACTOR_DEFINITION_EVENT: RayEvent.EventType
    ACTOR_LIFECYCLE_EVENT: RayEvent.EventType
    PLACEMENT_GROUP_DEFINITION_EVENT: RayEvent.EventType
    PLACEMENT_GROUP_LIFECYCLE_EVENT: RayEvent.EventType
    SUBMISSION_JOB_DEFINITION_EVENT: RayEvent.EventType
    SUBMISSION_JOB_LIFECYCLE_EVENT: RayEvent.EventType
    PLATFORM_EVENT: RayEvent.EventType
    WORKER_LIFECYCLE_EVENT: RayEvent.EventType
    WORKER_DEFINITION_EVENT: RayEvent.EventType
    class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        EVENT_SEVERITY_UNSPECIFIED: _ClassVar[RayEvent.Severity]
        TRACE: _ClassVar[RayEvent.Severity]
        DEBUG: _ClassVar[RayEvent.Severity]
        INFO: _ClassVar[RayEvent.Severity]
        WARNING: _ClassVar[RayEvent.Severity]
        ERROR: _ClassVar[RayEvent.Severity]
        FATAL: _ClassVar[RayEvent.Severity]
    EVENT_SEVERITY_UNSPECIFIED: RayEvent.Severity
    TRACE: RayEvent.Severity
    DEBUG: RayEvent.Severity
    INFO: RayEvent.Severity
    WARNING: RayEvent.Severity
    ERROR: RayEvent.Severity
    FATAL: RayEvent.Severity
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SESSION_NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_DEFINITION_EVENT_FIELD_NUMBER: _ClassVar[int]
    TASK_LIFECYCLE_EVENT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_TASK_DEFINITION_EVENT_FIELD_NUMBER: _ClassVar[int]
    TASK_PROFILE_EVENTS_FIELD_NUMBER: _ClassVar[int]
    DRIVER_JOB_DEFINITION_EVENT_FIELD_NUMBER: _ClassVar[int]
    DRIVER_JOB_LIFECYCLE_EVENT_FIELD_NUMBER: _ClassVar[int]
    NODE_DEFINITION_EVENT_FIELD_NUMBER: _ClassVar[int]
    NODE_LIFECYCLE_EVENT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_DEFINITION_EVENT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_LIFECYCLE_EVENT_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_GROUP_DEFINITION_EVENT_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_GROUP_LIFECYCLE_EVENT_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_JOB_DEFINITION_EVENT_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_JOB_LIFECYCLE_EVENT_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_EVENT_FIELD_NUMBER: _ClassVar[int]
    WORKER_LIFECYCLE_EVENT_FIELD_NUMBER: _ClassVar[int]
    WORKER_DEFINITION_EVENT_FIELD_NUMBER: _ClassVar[int]
    event_id: bytes
    source_type: RayEvent.SourceType
    event_type: RayEvent.EventType
    timestamp: _timestamp_pb2.Timestamp
    severity: RayEvent.Severity
    message: str
    session_name: str
    task_definition_event: TaskDefinitionEvent
    task_lifecycle_event: TaskLifecycleEvent
    actor_task_definition_event: ActorTaskDefinitionEvent
    task_profile_events: TaskProfileEvents
    driver_job_definition_event: DriverJobDefinitionEvent
    driver_job_lifecycle_event: DriverJobLifecycleEvent
    node_definition_event: NodeDefinitionEvent
    node_lifecycle_event: NodeLifecycleEvent
    actor_definition_event: ActorDefinitionEvent
    actor_lifecycle_event: ActorLifecycleEvent
    node_id: bytes
    placement_group_definition_event: PlacementGroupDefinitionEvent
    placement_group_lifecycle_event: PlacementGroupLifecycleEvent
    submission_job_definition_event: SubmissionJobDefinitionEvent
    submission_job_lifecycle_event: SubmissionJobLifecycleEvent
    platform_event: PlatformEvent
    worker_lifecycle_event: WorkerLifecycleEvent
    worker_definition_event: WorkerDefinitionEvent
    def __init__(self, event_id: _Optional[bytes] = ..., source_type: _Optional[_Union[RayEvent.SourceType, str]] = ..., event_type: _Optional[_Union[RayEvent.EventType, str]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., severity: _Optional[_Union[RayEvent.Severity, str]] = ..., message: _Optional[str] = ..., session_name: _Optional[str] = ..., task_definition_event: _Optional[_Union[TaskDefinitionEvent, _Mapping]] = ..., task_lifecycle_event: _Optional[_Union[TaskLifecycleEvent, _Mapping]] = ..., actor_task_definition_event: _Optional[_Union[ActorTaskDefinitionEvent, _Mapping]] = ..., task_profile_events: _Optional[_Union[TaskProfileEvents, _Mapping]] = ..., driver_job_definition_event: _Optional[_Union[DriverJobDefinitionEvent, _Mapping]] = ..., driver_job_lifecycle_event: _Optional[_Union[DriverJobLifecycleEvent, _Mapping]] = ..., node_definition_event: _Optional[_Union[NodeDefinitionEvent, _Mapping]] = ..., node_lifecycle_event: _Optional[_Union[NodeLifecycleEvent, _Mapping]] = ..., actor_definition_event: _Optional[_Union[ActorDefinitionEvent, _Mapping]] = ..., actor_lifecycle_event: _Optional[_Union[ActorLifecycleEvent, _Mapping]] = ..., node_id: _Optional[bytes] = ..., placement_group_definition_event: _Optional[_Union[PlacementGroupDefinitionEvent, _Mapping]] = ..., placement_group_lifecycle_event: _Optional[_Union[PlacementGroupLifecycleEvent, _Mapping]] = ..., submission_job_definition_event: _Optional[_Union[SubmissionJobDefinitionEvent, _Mapping]] = ..., submission_job_lifecycle_event: _Optional[_Union[SubmissionJobLifecycleEvent, _Mapping]] = ..., platform_event: _Optional[_Union[PlatformEvent, _Mapping]] = ..., worker_lifecycle_event: _Optional[_Union[WorkerLifecycleEvent, _Mapping]] = ..., worker_definition_event: _Optional[_Union[WorkerDefinitionEvent, _Mapping]] = ...) -> None: ...

class TaskDefinitionEvent(_message.Message):
    __slots__ = ("task_id", "task_attempt", "task_type", "language", "task_func", "task_name", "required_resources", "job_id", "parent_task_id", "placement_group_id", "ref_ids", "serialized_runtime_env", "call_site", "label_selector", "fallback_strategy", "is_detached_actor")
    class RequiredResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class RefIdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    class LabelSelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TASK_FUNC_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    REF_IDS_FIELD_NUMBER: _ClassVar[int]
    SERIALIZED_RUNTIME_ENV_FIELD_NUMBER: _ClassVar[int]
    CALL_SITE_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    IS_DETACHED_ACTOR_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    task_attempt: int
    task_type: _common_pb2.TaskType
    language: _common_pb2.Language
    task_func: _common_pb2.FunctionDescriptor
    task_name: str
    required_resources: _containers.ScalarMap[str, float]
    job_id: bytes
    parent_task_id: bytes
    placement_group_id: bytes
    ref_ids: _containers.ScalarMap[str, bytes]
    serialized_runtime_env: str
    call_site: str
    label_selector: _containers.ScalarMap[str, str]
    fallback_strategy: _common_pb2.FallbackStrategy
    is_detached_actor: bool
    def __init__(self, task_id: _Optional[bytes] = ..., task_attempt: _Optional[int] = ..., task_type: _Optional[_Union[_common_pb2.TaskType, str]] = ..., language: _Optional[_Union[_common_pb2.Language, str]] = ..., task_func: _Optional[_Union[_common_pb2.FunctionDescriptor, _Mapping]] = ..., task_name: _Optional[str] = ..., required_resources: _Optional[_Mapping[str, float]] = ..., job_id: _Optional[bytes] = ..., parent_task_id: _Optional[bytes] = ..., placement_group_id: _Optional[bytes] = ..., ref_ids: _Optional[_Mapping[str, bytes]] = ..., serialized_runtime_env: _Optional[str] = ..., call_site: _Optional[str] = ..., label_selector: _Optional[_Mapping[str, str]] = ..., fallback_strategy: _Optional[_Union[_common_pb2.FallbackStrategy, _Mapping]] = ..., is_detached_actor: _Optional[bool] = ...) -> None: ...

class TaskLifecycleEvent(_message.Message):
    __slots__ = ("task_id", "task_attempt", "state_transitions", "ray_error_info", "node_id", "worker_id", "worker_pid", "job_id", "is_debugger_paused", "actor_repr_name", "task_log_info")
    class StateTransition(_message.Message):
        __slots__ = ("state", "timestamp")
        STATE_FIELD_NUMBER: _ClassVar[int]
        TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
        state: _common_pb2.TaskStatus
        timestamp: _timestamp_pb2.Timestamp
        def __init__(self, state: _Optional[_Union[_common_pb2.TaskStatus, str]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
    class TaskLogInfo(_message.Message):
        __slots__ = ("stdout_file", "stderr_file", "stdout_start", "stdout_end", "stderr_start", "stderr_end")
        STDOUT_FILE_FIELD_NUMBER: _ClassVar[int]
        STDERR_FILE_FIELD_NUMBER: _ClassVar[int]
        STDOUT_START_FIELD_NUMBER: _ClassVar[int]
        STDOUT_END_FIELD_NUMBER: _ClassVar[int]
        STDERR_START_FIELD_NUMBER: _ClassVar[int]
        STDERR_END_FIELD_NUMBER: _ClassVar[int]
        stdout_file: str
        stderr_file: str
        stdout_start: int
        stdout_end: int
        stderr_start: int
        stderr_end: int
        def __init__(self, stdout_file: _Optional[str] = ..., stderr_file: _Optional[str] = ..., stdout_start: _Optional[int] = ..., stdout_end: _Optional[int] = ..., stderr_start: _Optional[int] = ..., stderr_end: _Optional[int] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STATE_TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    RAY_ERROR_INFO_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_PID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    IS_DEBUGGER_PAUSED_FIELD_NUMBER: _ClassVar[int]
    ACTOR_REPR_NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_LOG_INFO_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    task_attempt: int
    state_transitions: _containers.RepeatedCompositeFieldContainer[TaskLifecycleEvent.StateTransition]
    ray_error_info: _common_pb2.RayErrorInfo
    node_id: bytes
    worker_id: bytes
    worker_pid: int
    job_id: bytes
    is_debugger_paused: bool
    actor_repr_name: str
    task_log_info: TaskLifecycleEvent.TaskLogInfo
    def __init__(self, task_id: _Optional[bytes] = ..., task_attempt: _Optional[int] = ..., state_transitions: _Optional[_Iterable[_Union[TaskLifecycleEvent.StateTransition, _Mapping]]] = ..., ray_error_info: _Optional[_Union[_common_pb2.RayErrorInfo, _Mapping]] = ..., node_id: _Optional[bytes] = ..., worker_id: _Optional[bytes] = ..., worker_pid: _Optional[int] = ..., job_id: _Optional[bytes] = ..., is_debugger_paused: _Optional[bool] = ..., actor_repr_name: _Optional[str] = ..., task_log_info: _Optional[_Union[TaskLifecycleEvent.TaskLogInfo, _Mapping]] = ...) -> None: ...

class ActorTaskDefinitionEvent(_message.Message):
    __slots__ = ("task_id", "task_attempt", "language", "actor_func", "actor_task_name", "required_resources", "job_id", "actor_id", "parent_task_id", "placement_group_id", "ref_ids", "serialized_runtime_env", "call_site", "label_selector", "fallback_strategy", "is_detached_actor")
    class RequiredResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class RefIdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    class LabelSelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FUNC_FIELD_NUMBER: _ClassVar[int]
    ACTOR_TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    REF_IDS_FIELD_NUMBER: _ClassVar[int]
    SERIALIZED_RUNTIME_ENV_FIELD_NUMBER: _ClassVar[int]
    CALL_SITE_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    IS_DETACHED_ACTOR_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    task_attempt: int
    language: _common_pb2.Language
    actor_func: _common_pb2.FunctionDescriptor
    actor_task_name: str
    required_resources: _containers.ScalarMap[str, float]
    job_id: bytes
    actor_id: bytes
    parent_task_id: bytes
    placement_group_id: bytes
    ref_ids: _containers.ScalarMap[str, bytes]
    serialized_runtime_env: str
    call_site: str
    label_selector: _containers.ScalarMap[str, str]
    fallback_strategy: _common_pb2.FallbackStrategy
    is_detached_actor: bool
    def __init__(self, task_id: _Optional[bytes] = ..., task_attempt: _Optional[int] = ..., language: _Optional[_Union[_common_pb2.Language, str]] = ..., actor_func: _Optional[_Union[_common_pb2.FunctionDescriptor, _Mapping]] = ..., actor_task_name: _Optional[str] = ..., required_resources: _Optional[_Mapping[str, float]] = ..., job_id: _Optional[bytes] = ..., actor_id: _Optional[bytes] = ..., parent_task_id: _Optional[bytes] = ..., placement_group_id: _Optional[bytes] = ..., ref_ids: _Optional[_Mapping[str, bytes]] = ..., serialized_runtime_env: _Optional[str] = ..., call_site: _Optional[str] = ..., label_selector: _Optional[_Mapping[str, str]] = ..., fallback_strategy: _Optional[_Union[_common_pb2.FallbackStrategy, _Mapping]] = ..., is_detached_actor: _Optional[bool] = ...) -> None: ...

class TaskProfileEvents(_message.Message):
    __slots__ = ("task_id", "attempt_number", "job_id", "profile_events")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_EVENTS_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    attempt_number: int
    job_id: bytes
    profile_events: _profile_events_pb2.ProfileEvents
    def __init__(self, task_id: _Optional[bytes] = ..., attempt_number: _Optional[int] = ..., job_id: _Optional[bytes] = ..., profile_events: _Optional[_Union[_profile_events_pb2.ProfileEvents, _Mapping]] = ...) -> None: ...

class DriverJobDefinitionEvent(_message.Message):
    __slots__ = ("job_id", "driver_pid", "driver_node_id", "entrypoint", "config")
    class Config(_message.Message):
        __slots__ = ("serialized_runtime_env", "metadata")
        class MetadataEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: str
            def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
        SERIALIZED_RUNTIME_ENV_FIELD_NUMBER: _ClassVar[int]
        METADATA_FIELD_NUMBER: _ClassVar[int]
        serialized_runtime_env: str
        metadata: _containers.ScalarMap[str, str]
        def __init__(self, serialized_runtime_env: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DRIVER_PID_FIELD_NUMBER: _ClassVar[int]
    DRIVER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    job_id: bytes
    driver_pid: int
    driver_node_id: bytes
    entrypoint: str
    config: DriverJobDefinitionEvent.Config
    def __init__(self, job_id: _Optional[bytes] = ..., driver_pid: _Optional[int] = ..., driver_node_id: _Optional[bytes] = ..., entrypoint: _Optional[str] = ..., config: _Optional[_Union[DriverJobDefinitionEvent.Config, _Mapping]] = ...) -> None: ...

class DriverJobLifecycleEvent(_message.Message):
    __slots__ = ("job_id", "state_transitions")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNSPECIFIED: _ClassVar[DriverJobLifecycleEvent.State]
        CREATED: _ClassVar[DriverJobLifecycleEvent.State]
        FINISHED: _ClassVar[DriverJobLifecycleEvent.State]
    UNSPECIFIED: DriverJobLifecycleEvent.State
    CREATED: DriverJobLifecycleEvent.State
    FINISHED: DriverJobLifecycleEvent.State
    class StateTransition(_message.Message):
        __slots__ = ("state", "timestamp")
        STATE_FIELD_NUMBER: _ClassVar[int]
        TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
        state: DriverJobLifecycleEvent.State
        timestamp: _timestamp_pb2.Timestamp
        def __init__(self, state: _Optional[_Union[DriverJobLifecycleEvent.State, str]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    job_id: bytes
    state_transitions: _containers.RepeatedCompositeFieldContainer[DriverJobLifecycleEvent.StateTransition]
    def __init__(self, job_id: _Optional[bytes] = ..., state_transitions: _Optional[_Iterable[_Union[DriverJobLifecycleEvent.StateTransition, _Mapping]]] = ...) -> None: ...

class NodeDefinitionEvent(_message.Message):
    __slots__ = ("node_id", "node_ip_address", "labels", "start_timestamp", "hostname", "node_name", "instance_id", "instance_type_name")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    START_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    node_ip_address: str
    labels: _containers.ScalarMap[str, str]
    start_timestamp: _timestamp_pb2.Timestamp
    hostname: str
    node_name: str
    instance_id: str
    instance_type_name: str
    def __init__(self, node_id: _Optional[bytes] = ..., node_ip_address: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., start_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., hostname: _Optional[str] = ..., node_name: _Optional[str] = ..., instance_id: _Optional[str] = ..., instance_type_name: _Optional[str] = ...) -> None: ...

class NodeLifecycleEvent(_message.Message):
    __slots__ = ("node_id", "state_transitions")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ALIVE: _ClassVar[NodeLifecycleEvent.State]
        DEAD: _ClassVar[NodeLifecycleEvent.State]
    ALIVE: NodeLifecycleEvent.State
    DEAD: NodeLifecycleEvent.State
    class AliveSubState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNSPECIFIED: _ClassVar[NodeLifecycleEvent.AliveSubState]
        DRAINING: _ClassVar[NodeLifecycleEvent.AliveSubState]
    UNSPECIFIED: NodeLifecycleEvent.AliveSubState
    DRAINING: NodeLifecycleEvent.AliveSubState
    class DeathInfo(_message.Message):
        __slots__ = ("reason", "reason_message")
        class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
            __slots__ = ()
            UNSPECIFIED: _ClassVar[NodeLifecycleEvent.DeathInfo.Reason]
            EXPECTED_TERMINATION: _ClassVar[NodeLifecycleEvent.DeathInfo.Reason]
            UNEXPECTED_TERMINATION: _ClassVar[NodeLifecycleEvent.DeathInfo.Reason]
            AUTOSCALER_DRAIN_PREEMPTED: _ClassVar[NodeLifecycleEvent.DeathInfo.Reason]
            AUTOSCALER_DRAIN_IDLE: _ClassVar[NodeLifecycleEvent.DeathInfo.Reason]
        UNSPECIFIED: NodeLifecycleEvent.DeathInfo.Reason
        EXPECTED_TERMINATION: NodeLifecycleEvent.DeathInfo.Reason
        UNEXPECTED_TERMINATION: NodeLifecycleEvent.DeathInfo.Reason
        AUTOSCALER_DRAIN_PREEMPTED: NodeLifecycleEvent.DeathInfo.Reason
        AUTOSCALER_DRAIN_IDLE: NodeLifecycleEvent.DeathInfo.Reason
        REASON_FIELD_NUMBER: _ClassVar[int]
        REASON_MESSAGE_FIELD_NUMBER: _ClassVar[int]
        reason: NodeLifecycleEvent.DeathInfo.Reason
        reason_message: str
        def __init__(self, reason: _Optional[_Union[NodeLifecycleEvent.DeathInfo.Reason, str]] = ..., reason_message: _Optional[str] = ...) -> None: ...
    class StateTransition(_message.Message):
        __slots__ = ("state", "timestamp", "resources", "death_info", "alive_sub_state")
        class ResourcesEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: float
            def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
        STATE_FIELD_NUMBER: _ClassVar[int]
        TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
        RESOURCES_FIELD_NUMBER: _ClassVar[int]
        DEATH_INFO_FIELD_NUMBER: _ClassVar[int]
        ALIVE_SUB_STATE_FIELD_NUMBER: _ClassVar[int]
        state: NodeLifecycleEvent.State
        timestamp: _timestamp_pb2.Timestamp
        resources: _containers.ScalarMap[str, float]
        death_info: NodeLifecycleEvent.DeathInfo
        alive_sub_state: NodeLifecycleEvent.AliveSubState
        def __init__(self, state: _Optional[_Union[NodeLifecycleEvent.State, str]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resources: _Optional[_Mapping[str, float]] = ..., death_info: _Optional[_Union[NodeLifecycleEvent.DeathInfo, _Mapping]] = ..., alive_sub_state: _Optional[_Union[NodeLifecycleEvent.AliveSubState, str]] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    state_transitions: _containers.RepeatedCompositeFieldContainer[NodeLifecycleEvent.StateTransition]
    def __init__(self, node_id: _Optional[bytes] = ..., state_transitions: _Optional[_Iterable[_Union[NodeLifecycleEvent.StateTransition, _Mapping]]] = ...) -> None: ...

class ActorDefinitionEvent(_message.Message):
    __slots__ = ("actor_id", "job_id", "is_detached", "name", "ray_namespace", "serialized_runtime_env", "class_name", "required_resources", "placement_group_id", "label_selector", "call_site", "parent_id", "ref_ids")
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
    class RefIdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    IS_DETACHED_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RAY_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    SERIALIZED_RUNTIME_ENV_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    CALL_SITE_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    REF_IDS_FIELD_NUMBER: _ClassVar[int]
    actor_id: bytes
    job_id: bytes
    is_detached: bool
    name: str
    ray_namespace: str
    serialized_runtime_env: str
    class_name: str
    required_resources: _containers.ScalarMap[str, float]
    placement_group_id: bytes
    label_selector: _containers.ScalarMap[str, str]
    call_site: str
    parent_id: bytes
    ref_ids: _containers.ScalarMap[str, bytes]
    def __init__(self, actor_id: _Optional[bytes] = ..., job_id: _Optional[bytes] = ..., is_detached: _Optional[bool] = ..., name: _Optional[str] = ..., ray_namespace: _Optional[str] = ..., serialized_runtime_env: _Optional[str] = ..., class_name: _Optional[str] = ..., required_resources: _Optional[_Mapping[str, float]] = ..., placement_group_id: _Optional[bytes] = ..., label_selector: _Optional[_Mapping[str, str]] = ..., call_site: _Optional[str] = ..., parent_id: _Optional[bytes] = ..., ref_ids: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class ActorLifecycleEvent(_message.Message):
    __slots__ = ("actor_id", "state_transitions")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        DEPENDENCIES_UNREADY: _ClassVar[ActorLifecycleEvent.State]
        PENDING_CREATION: _ClassVar[ActorLifecycleEvent.State]
        ALIVE: _ClassVar[ActorLifecycleEvent.State]
        RESTARTING: _ClassVar[ActorLifecycleEvent.State]
        DEAD: _ClassVar[ActorLifecycleEvent.State]
    DEPENDENCIES_UNREADY: ActorLifecycleEvent.State
    PENDING_CREATION: ActorLifecycleEvent.State
    ALIVE: ActorLifecycleEvent.State
    RESTARTING: ActorLifecycleEvent.State
    DEAD: ActorLifecycleEvent.State
    class RestartReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTOR_FAILURE: _ClassVar[ActorLifecycleEvent.RestartReason]
        LINEAGE_RECONSTRUCTION: _ClassVar[ActorLifecycleEvent.RestartReason]
        NODE_PREEMPTION: _ClassVar[ActorLifecycleEvent.RestartReason]
    ACTOR_FAILURE: ActorLifecycleEvent.RestartReason
    LINEAGE_RECONSTRUCTION: ActorLifecycleEvent.RestartReason
    NODE_PREEMPTION: ActorLifecycleEvent.RestartReason
    class StateTransition(_message.Message):
        __slots__ = ("state", "timestamp", "node_id", "worker_id", "repr_name", "death_cause", "pid", "port", "restart_reason")
        STATE_FIELD_NUMBER: _ClassVar[int]
        TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
        NODE_ID_FIELD_NUMBER: _ClassVar[int]
        WORKER_ID_FIELD_NUMBER: _ClassVar[int]
        REPR_NAME_FIELD_NUMBER: _ClassVar[int]
        DEATH_CAUSE_FIELD_NUMBER: _ClassVar[int]
        PID_FIELD_NUMBER: _ClassVar[int]
        PORT_FIELD_NUMBER: _ClassVar[int]
        RESTART_REASON_FIELD_NUMBER: _ClassVar[int]
        state: ActorLifecycleEvent.State
        timestamp: _timestamp_pb2.Timestamp
        node_id: bytes
        worker_id: bytes
        repr_name: str
        death_cause: _common_pb2.ActorDeathCause
        pid: int
        port: int
        restart_reason: ActorLifecycleEvent.RestartReason
        def __init__(self, state: _Optional[_Union[ActorLifecycleEvent.State, str]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., node_id: _Optional[bytes] = ..., worker_id: _Optional[bytes] = ..., repr_name: _Optional[str] = ..., death_cause: _Optional[_Union[_common_pb2.ActorDeathCause, _Mapping]] = ..., pid: _Optional[int] = ..., port: _Optional[int] = ..., restart_reason: _Optional[_Union[ActorLifecycleEvent.RestartReason, str]] = ...) -> None: ...
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    actor_id: bytes
    state_transitions: _containers.RepeatedCompositeFieldContainer[ActorLifecycleEvent.StateTransition]
    def __init__(self, actor_id: _Optional[bytes] = ..., state_transitions: _Optional[_Iterable[_Union[ActorLifecycleEvent.StateTransition, _Mapping]]] = ...) -> None: ...

class PlacementGroupDefinitionEvent(_message.Message):
    __slots__ = ("placement_group_id", "name", "ray_namespace", "strategy", "is_detached", "creator_job_id", "creator_actor_id", "bundles", "soft_target_node_id", "creation_request_received_ns")
    PLACEMENT_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RAY_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    IS_DETACHED_FIELD_NUMBER: _ClassVar[int]
    CREATOR_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    SOFT_TARGET_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATION_REQUEST_RECEIVED_NS_FIELD_NUMBER: _ClassVar[int]
    placement_group_id: bytes
    name: str
    ray_namespace: str
    strategy: _common_pb2.PlacementStrategy
    is_detached: bool
    creator_job_id: bytes
    creator_actor_id: bytes
    bundles: _containers.RepeatedCompositeFieldContainer[BundleSpec]
    soft_target_node_id: bytes
    creation_request_received_ns: int
    def __init__(self, placement_group_id: _Optional[bytes] = ..., name: _Optional[str] = ..., ray_namespace: _Optional[str] = ..., strategy: _Optional[_Union[_common_pb2.PlacementStrategy, str]] = ..., is_detached: _Optional[bool] = ..., creator_job_id: _Optional[bytes] = ..., creator_actor_id: _Optional[bytes] = ..., bundles: _Optional[_Iterable[_Union[BundleSpec, _Mapping]]] = ..., soft_target_node_id: _Optional[bytes] = ..., creation_request_received_ns: _Optional[int] = ...) -> None: ...

class BundleSpec(_message.Message):
    __slots__ = ("bundle_index", "unit_resources", "label_selector")
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
    BUNDLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    UNIT_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    bundle_index: int
    unit_resources: _containers.ScalarMap[str, float]
    label_selector: _containers.ScalarMap[str, str]
    def __init__(self, bundle_index: _Optional[int] = ..., unit_resources: _Optional[_Mapping[str, float]] = ..., label_selector: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PlacementGroupLifecycleEvent(_message.Message):
    __slots__ = ("placement_group_id", "state_transitions")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PENDING: _ClassVar[PlacementGroupLifecycleEvent.State]
        PREPARED: _ClassVar[PlacementGroupLifecycleEvent.State]
        CREATED: _ClassVar[PlacementGroupLifecycleEvent.State]
        REMOVED: _ClassVar[PlacementGroupLifecycleEvent.State]
        RESCHEDULING: _ClassVar[PlacementGroupLifecycleEvent.State]
    PENDING: PlacementGroupLifecycleEvent.State
    PREPARED: PlacementGroupLifecycleEvent.State
    CREATED: PlacementGroupLifecycleEvent.State
    REMOVED: PlacementGroupLifecycleEvent.State
    RESCHEDULING: PlacementGroupLifecycleEvent.State
    class SchedulingState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        QUEUED: _ClassVar[PlacementGroupLifecycleEvent.SchedulingState]
        SCHEDULING_REMOVED: _ClassVar[PlacementGroupLifecycleEvent.SchedulingState]
        SCHEDULING_STARTED: _ClassVar[PlacementGroupLifecycleEvent.SchedulingState]
        NO_RESOURCES: _ClassVar[PlacementGroupLifecycleEvent.SchedulingState]
        INFEASIBLE: _ClassVar[PlacementGroupLifecycleEvent.SchedulingState]
        FAILED_TO_COMMIT_RESOURCES: _ClassVar[PlacementGroupLifecycleEvent.SchedulingState]
        FINISHED: _ClassVar[PlacementGroupLifecycleEvent.SchedulingState]
    QUEUED: PlacementGroupLifecycleEvent.SchedulingState
    SCHEDULING_REMOVED: PlacementGroupLifecycleEvent.SchedulingState
    SCHEDULING_STARTED: PlacementGroupLifecycleEvent.SchedulingState
    NO_RESOURCES: PlacementGroupLifecycleEvent.SchedulingState
    INFEASIBLE: PlacementGroupLifecycleEvent.SchedulingState
    FAILED_TO_COMMIT_RESOURCES: PlacementGroupLifecycleEvent.SchedulingState
    FINISHED: PlacementGroupLifecycleEvent.SchedulingState
    class BundlePlacement(_message.Message):
        __slots__ = ("bundle_index", "node_id")
        BUNDLE_INDEX_FIELD_NUMBER: _ClassVar[int]
        NODE_ID_FIELD_NUMBER: _ClassVar[int]
        bundle_index: int
        node_id: bytes
        def __init__(self, bundle_index: _Optional[int] = ..., node_id: _Optional[bytes] = ...) -> None: ...
    class StateTransition(_message.Message):
        __slots__ = ("state", "timestamp", "scheduling_state", "scheduling_attempt", "highest_retry_delay_ms", "bundle_placements")
        STATE_FIELD_NUMBER: _ClassVar[int]
        TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
        SCHEDULING_STATE_FIELD_NUMBER: _ClassVar[int]
        SCHEDULING_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
        HIGHEST_RETRY_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
        BUNDLE_PLACEMENTS_FIELD_NUMBER: _ClassVar[int]
        state: PlacementGroupLifecycleEvent.State
        timestamp: _timestamp_pb2.Timestamp
        scheduling_state: PlacementGroupLifecycleEvent.SchedulingState
        scheduling_attempt: int
        highest_retry_delay_ms: float
        bundle_placements: _containers.RepeatedCompositeFieldContainer[PlacementGroupLifecycleEvent.BundlePlacement]
        def __init__(self, state: _Optional[_Union[PlacementGroupLifecycleEvent.State, str]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., scheduling_state: _Optional[_Union[PlacementGroupLifecycleEvent.SchedulingState, str]] = ..., scheduling_attempt: _Optional[int] = ..., highest_retry_delay_ms: _Optional[float] = ..., bundle_placements: _Optional[_Iterable[_Union[PlacementGroupLifecycleEvent.BundlePlacement, _Mapping]]] = ...) -> None: ...
    PLACEMENT_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    placement_group_id: bytes
    state_transitions: _containers.RepeatedCompositeFieldContainer[PlacementGroupLifecycleEvent.StateTransition]
    def __init__(self, placement_group_id: _Optional[bytes] = ..., state_transitions: _Optional[_Iterable[_Union[PlacementGroupLifecycleEvent.StateTransition, _Mapping]]] = ...) -> None: ...

class SubmissionJobDefinitionEvent(_message.Message):
    __slots__ = ("submission_id", "entrypoint", "config", "entrypoint_resources")
    class Config(_message.Message):
        __slots__ = ("serialized_runtime_env", "metadata")
        class MetadataEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: str
            def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
        SERIALIZED_RUNTIME_ENV_FIELD_NUMBER: _ClassVar[int]
        METADATA_FIELD_NUMBER: _ClassVar[int]
        serialized_runtime_env: str
        metadata: _containers.ScalarMap[str, str]
        def __init__(self, serialized_runtime_env: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...
    class EntrypointResources(_message.Message):
        __slots__ = ("num_cpus", "num_gpus", "memory", "custom_resources")
        class CustomResourcesEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: float
            def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
        NUM_CPUS_FIELD_NUMBER: _ClassVar[int]
        NUM_GPUS_FIELD_NUMBER: _ClassVar[int]
        MEMORY_FIELD_NUMBER: _ClassVar[int]
        CUSTOM_RESOURCES_FIELD_NUMBER: _ClassVar[int]
        num_cpus: float
        num_gpus: float
        memory: int
        custom_resources: _containers.ScalarMap[str, float]
        def __init__(self, num_cpus: _Optional[float] = ..., num_gpus: _Optional[float] = ..., memory: _Optional[int] = ..., custom_resources: _Optional[_Mapping[str, float]] = ...) -> None: ...
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    submission_id: str
    entrypoint: str
    config: SubmissionJobDefinitionEvent.Config
    entrypoint_resources: SubmissionJobDefinitionEvent.EntrypointResources
    def __init__(self, submission_id: _Optional[str] = ..., entrypoint: _Optional[str] = ..., config: _Optional[_Union[SubmissionJobDefinitionEvent.Config, _Mapping]] = ..., entrypoint_resources: _Optional[_Union[SubmissionJobDefinitionEvent.EntrypointResources, _Mapping]] = ...) -> None: ...

class SubmissionJobLifecycleEvent(_message.Message):
    __slots__ = ("submission_id", "state_transitions")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNSPECIFIED: _ClassVar[SubmissionJobLifecycleEvent.State]
        PENDING: _ClassVar[SubmissionJobLifecycleEvent.State]
        RUNNING: _ClassVar[SubmissionJobLifecycleEvent.State]
        STOPPED: _ClassVar[SubmissionJobLifecycleEvent.State]
        SUCCEEDED: _ClassVar[SubmissionJobLifecycleEvent.State]
        FAILED: _ClassVar[SubmissionJobLifecycleEvent.State]
    UNSPECIFIED: SubmissionJobLifecycleEvent.State
    PENDING: SubmissionJobLifecycleEvent.State
    RUNNING: SubmissionJobLifecycleEvent.State
    STOPPED: SubmissionJobLifecycleEvent.State
    SUCCEEDED: SubmissionJobLifecycleEvent.State
    FAILED: SubmissionJobLifecycleEvent.State
    class StateTransition(_message.Message):
        __slots__ = ("state", "timestamp", "message", "error_type", "driver_node_id", "driver_agent_http_address", "driver_exit_code")
        STATE_FIELD_NUMBER: _ClassVar[int]
        TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
        MESSAGE_FIELD_NUMBER: _ClassVar[int]
        ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
        DRIVER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
        DRIVER_AGENT_HTTP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
        DRIVER_EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
        state: SubmissionJobLifecycleEvent.State
        timestamp: _timestamp_pb2.Timestamp
        message: str
        error_type: str
        driver_node_id: bytes
        driver_agent_http_address: str
        driver_exit_code: int
        def __init__(self, state: _Optional[_Union[SubmissionJobLifecycleEvent.State, str]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ..., error_type: _Optional[str] = ..., driver_node_id: _Optional[bytes] = ..., driver_agent_http_address: _Optional[str] = ..., driver_exit_code: _Optional[int] = ...) -> None: ...
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    submission_id: str
    state_transitions: _containers.RepeatedCompositeFieldContainer[SubmissionJobLifecycleEvent.StateTransition]
    def __init__(self, submission_id: _Optional[str] = ..., state_transitions: _Optional[_Iterable[_Union[SubmissionJobLifecycleEvent.StateTransition, _Mapping]]] = ...) -> None: ...

class PlatformEvent(_message.Message):
    __slots__ = ("source", "object_kind", "object_name", "message", "reason", "custom_fields")
    class CustomFieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KIND_FIELD_NUMBER: _ClassVar[int]
    OBJECT_NAME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELDS_FIELD_NUMBER: _ClassVar[int]
    source: Source
    object_kind: str
    object_name: str
    message: str
    reason: str
    custom_fields: _containers.ScalarMap[str, str]
    def __init__(self, source: _Optional[_Union[Source, _Mapping]] = ..., object_kind: _Optional[str] = ..., object_name: _Optional[str] = ..., message: _Optional[str] = ..., reason: _Optional[str] = ..., custom_fields: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Source(_message.Message):
    __slots__ = ("platform", "component", "metadata")
    class Platform(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PLATFORM_UNSPECIFIED: _ClassVar[Source.Platform]
        KUBERNETES: _ClassVar[Source.Platform]
    PLATFORM_UNSPECIFIED: Source.Platform
    KUBERNETES: Source.Platform
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    platform: Source.Platform
    component: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, platform: _Optional[_Union[Source.Platform, str]] = ..., component: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class WorkerLifecycleEvent(_message.Message):
    __slots__ = ("worker_id", "job_id", "state_transitions")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ALIVE: _ClassVar[WorkerLifecycleEvent.State]
        DEAD: _ClassVar[WorkerLifecycleEvent.State]
    ALIVE: WorkerLifecycleEvent.State
    DEAD: WorkerLifecycleEvent.State
    class DeathInfo(_message.Message):
        __slots__ = ("exit_type", "exit_detail", "memory_used_bytes")
        EXIT_TYPE_FIELD_NUMBER: _ClassVar[int]
        EXIT_DETAIL_FIELD_NUMBER: _ClassVar[int]
        MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
        exit_type: _common_pb2.WorkerExitType
        exit_detail: str
        memory_used_bytes: int
        def __init__(self, exit_type: _Optional[_Union[_common_pb2.WorkerExitType, str]] = ..., exit_detail: _Optional[str] = ..., memory_used_bytes: _Optional[int] = ...) -> None: ...
    class StateTransition(_message.Message):
        __slots__ = ("state", "timestamp", "worker_launch_time_ms", "worker_launched_time_ms", "start_time_ms", "end_time_ms", "death_info")
        STATE_FIELD_NUMBER: _ClassVar[int]
        TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
        WORKER_LAUNCH_TIME_MS_FIELD_NUMBER: _ClassVar[int]
        WORKER_LAUNCHED_TIME_MS_FIELD_NUMBER: _ClassVar[int]
        START_TIME_MS_FIELD_NUMBER: _ClassVar[int]
        END_TIME_MS_FIELD_NUMBER: _ClassVar[int]
        DEATH_INFO_FIELD_NUMBER: _ClassVar[int]
        state: WorkerLifecycleEvent.State
        timestamp: _timestamp_pb2.Timestamp
        worker_launch_time_ms: int
        worker_launched_time_ms: int
        start_time_ms: int
        end_time_ms: int
        death_info: WorkerLifecycleEvent.DeathInfo
        def __init__(self, state: _Optional[_Union[WorkerLifecycleEvent.State, str]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., worker_launch_time_ms: _Optional[int] = ..., worker_launched_time_ms: _Optional[int] = ..., start_time_ms: _Optional[int] = ..., end_time_ms: _Optional[int] = ..., death_info: _Optional[_Union[WorkerLifecycleEvent.DeathInfo, _Mapping]] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    worker_id: bytes
    job_id: bytes
    state_transitions: _containers.RepeatedCompositeFieldContainer[WorkerLifecycleEvent.StateTransition]
    def __init__(self, worker_id: _Optional[bytes] = ..., job_id: _Optional[bytes] = ..., state_transitions: _Optional[_Iterable[_Union[WorkerLifecycleEvent.StateTransition, _Mapping]]] = ...) -> None: ...

class WorkerDefinitionEvent(_message.Message):
    __slots__ = ("worker_id", "node_id", "worker_type", "pid")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_TYPE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    worker_id: bytes
    node_id: bytes
    worker_type: _common_pb2.WorkerType
    pid: int
    def __init__(self, worker_id: _Optional[bytes] = ..., node_id: _Optional[bytes] = ..., worker_type: _Optional[_Union[_common_pb2.WorkerType, str]] = ..., pid: _Optional[int] = ...) -> None: ...

class TaskEventsMetadata(_message.Message):
    __slots__ = ("dropped_task_attempts",)
    DROPPED_TASK_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    dropped_task_attempts: _containers.RepeatedCompositeFieldContainer[_common_pb2.TaskAttempt]
    def __init__(self, dropped_task_attempts: _Optional[_Iterable[_Union[_common_pb2.TaskAttempt, _Mapping]]] = ...) -> None: ...

class AddEventsReply(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: AddEventsStatus
    def __init__(self, status: _Optional[_Union[AddEventsStatus, _Mapping]] = ...) -> None: ...

class AddEventsStatus(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...
