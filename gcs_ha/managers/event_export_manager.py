"""The event export manager: Ray's RayEventExportGcsService (AddEvents). With Ray's event
aggregator enabled, task events reach the GCS as `RayEvent`s; their task kinds are
converted to TaskEvents and stored by the task manager, every other kind is dropped and
counted (`dropped`). Nothing is stored or replicated here. Design: DESIGN.md, "Jobs,
workers, task events, runtime envs".

Errors: none of its own; a batch is always accepted.
"""

from __future__ import annotations

import logging
from collections import Counter

from gcs_ha.managers.manager import GcsInitData
from gcs_ha.managers.task_manager import TaskManager
from gcs_ha.proto.ray import common_pb2
from gcs_ha.proto.ray import events_pb2 as ev
from gcs_ha.proto.ray.common_pb2 import FunctionDescriptor
from gcs_ha.proto.ray.gcs_pb2 import TaskEventData, TaskEvents

log = logging.getLogger(__name__)

ACTOR_ID_BYTES = 16  # a TaskID ends with the ActorID of its actor (24 = 8 + 16)
RayEvent = ev.RayEvent


def call_string(descriptor: FunctionDescriptor) -> str:
    """The short call name Ray shows for a function ("foo", "Bar.foo")."""
    kind = descriptor.WhichOneof("function_descriptor")
    if kind == "python_function_descriptor":
        py = descriptor.python_function_descriptor
        function = py.function_name.rsplit(".", 1)[-1]
        return f"{py.class_name.rsplit('.', 1)[-1]}.{function}" if py.class_name else function
    if kind == "java_function_descriptor":
        java = descriptor.java_function_descriptor
        return f"{java.class_name}.{java.function_name}"
    if kind == "cpp_function_descriptor":
        return descriptor.cpp_function_descriptor.function_name
    return ""


def _definition(
    event: ev.TaskDefinitionEvent | ev.ActorTaskDefinitionEvent, function: FunctionDescriptor
) -> TaskEvents:
    """The part both kinds of definition events share."""
    out = TaskEvents(task_id=event.task_id, attempt_number=event.task_attempt, job_id=event.job_id)
    info = out.task_info
    info.task_id, info.job_id = event.task_id, event.job_id
    info.parent_task_id = event.parent_task_id
    if event.placement_group_id:
        info.placement_group_id = event.placement_group_id
    if event.HasField("call_site"):
        info.call_site = event.call_site
    info.label_selector.update(event.label_selector)
    info.language = event.language
    info.runtime_env_info.serialized_runtime_env = event.serialized_runtime_env
    info.func_or_class_name = call_string(function)
    info.required_resources.update(event.required_resources)
    return out


def _task_definition(event: ev.TaskDefinitionEvent) -> TaskEvents:
    out = _definition(event, event.task_func)
    out.task_info.type, out.task_info.name = event.task_type, event.task_name
    if event.task_type == common_pb2.ACTOR_CREATION_TASK:
        out.task_info.actor_id = event.task_id[-ACTOR_ID_BYTES:]
    return out


def _actor_task_definition(event: ev.ActorTaskDefinitionEvent) -> TaskEvents:
    out = _definition(event, event.actor_func)
    out.task_info.type, out.task_info.name = common_pb2.ACTOR_TASK, event.actor_task_name
    if event.actor_id:
        out.task_info.actor_id = event.actor_id
    return out


def _task_lifecycle(event: ev.TaskLifecycleEvent) -> TaskEvents:
    out = TaskEvents(task_id=event.task_id, attempt_number=event.task_attempt, job_id=event.job_id)
    update = out.state_updates
    if event.node_id:
        update.node_id = event.node_id
    if event.worker_id:
        update.worker_id = event.worker_id
    if event.worker_pid:
        update.worker_pid = event.worker_pid
    if event.HasField("ray_error_info"):
        update.error_info.CopyFrom(event.ray_error_info)
    if event.HasField("is_debugger_paused"):
        update.is_debugger_paused = event.is_debugger_paused
    if event.HasField("actor_repr_name"):
        update.actor_repr_name = event.actor_repr_name
    for transition in event.state_transitions:
        stamp = transition.timestamp
        update.state_ts_ns[transition.state] = stamp.seconds * 1_000_000_000 + stamp.nanos
    return out


def _task_profile(event: ev.TaskProfileEvents) -> TaskEvents:
    out = TaskEvents(
        task_id=event.task_id, attempt_number=event.attempt_number, job_id=event.job_id
    )
    if event.HasField("profile_events"):
        out.profile_events.CopyFrom(event.profile_events)
    return out


def to_task_events(event: RayEvent) -> TaskEvents | None:
    """The TaskEvents a RayEvent stands for, or None for a kind that is not a task's."""
    if event.event_type == RayEvent.TASK_DEFINITION_EVENT:
        return _task_definition(event.task_definition_event)
    if event.event_type == RayEvent.ACTOR_TASK_DEFINITION_EVENT:
        return _actor_task_definition(event.actor_task_definition_event)
    if event.event_type == RayEvent.TASK_LIFECYCLE_EVENT:
        return _task_lifecycle(event.task_lifecycle_event)
    if event.event_type == RayEvent.TASK_PROFILE_EVENT:
        return _task_profile(event.task_profile_events)
    return None


def _kind_name(event_type: int) -> str:
    try:
        return RayEvent.EventType.Name(event_type)
    except ValueError:
        return str(event_type)


class EventExportManager:
    """Feeds the task events of AddEvents batches to the task manager."""

    def __init__(self, task_manager: TaskManager) -> None:
        self._tasks = task_manager
        self.dropped: Counter[str] = Counter()  # events of other kinds, by kind name

    @property
    def name(self) -> str:
        return "event_export"

    async def start(self, init: GcsInitData) -> None:
        self.dropped.clear()

    async def stop(self) -> None:
        """Nothing runs in the background."""

    def add_events(self, data: ev.RayEventsData) -> int:
        """Take one AddEvents batch; how many of its events were task events."""
        batch = TaskEventData()
        for event in data.events:
            converted = to_task_events(event)
            if converted is None:
                self.dropped[_kind_name(event.event_type)] += 1
            else:
                batch.events_by_task.append(converted)
        batch.dropped_task_attempts.extend(data.task_events_metadata.dropped_task_attempts)
        self._tasks.add_task_event_data(batch)
        skipped = len(data.events) - len(batch.events_by_task)
        if skipped:
            log.debug("AddEvents: dropped %d event(s) that are not task events", skipped)
        return len(batch.events_by_task)
