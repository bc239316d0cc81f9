"""TaskManager (bounded in-memory task events) and EventExportManager (RayEvents -> task
events), fed with the messages Ray's core workers and event aggregator send."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from gcs_ha.errors import InvalidRequestError
from gcs_ha.managers.event_export_manager import EventExportManager, call_string
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.managers.task_manager import TaskManager, latest_state
from gcs_ha.proto.ray import common_pb2
from gcs_ha.proto.ray import events_pb2 as ev
from gcs_ha.proto.ray.common_pb2 import (
    Address,
    FunctionDescriptor,
    PythonFunctionDescriptor,
    TaskAttempt,
    TaskInfoEntry,
)
from gcs_ha.proto.ray.gcs_pb2 import (
    JobTableData,
    TaskEventData,
    TaskEvents,
    TaskStateUpdate,
    WorkerTableData,
)
from gcs_ha.proto.ray.gcs_service_pb2 import EQUAL, NOT_EQUAL, GetTaskEventsRequest
from gcs_ha.proto.ray.profile_events_pb2 import ProfileEventEntry, ProfileEvents
from gcs_ha.testing.polling import until

Filters = GetTaskEventsRequest.Filters
JOB1, JOB2 = b"\x01\x00\x00\x00", b"\x02\x00\x00\x00"
WORKER = b"w" * 28
RayEvent = ev.RayEvent


def task_id(n: int, job: bytes = JOB1) -> bytes:
    return n.to_bytes(4, "big") * 5 + job  # 24 bytes ending with the job id


def info(n: int, job: bytes = JOB1, **fields: Any) -> TaskInfoEntry:
    return TaskInfoEntry(
        type=fields.pop("type", common_pb2.NORMAL_TASK),
        name=fields.pop("name", f"task{n}"),
        job_id=job,
        task_id=task_id(n, job),
        **fields,
    )


def events(n: int, job: bytes = JOB1, attempt: int = 0, **parts: Any) -> TaskEvents:
    return TaskEvents(task_id=task_id(n, job), attempt_number=attempt, job_id=job, **parts)


def states(*pairs: tuple[int, int], **fields: Any) -> TaskStateUpdate:
    return TaskStateUpdate(state_ts_ns=dict(pairs), **fields)


def batch(*items: TaskEvents, **fields: Any) -> TaskEventData:
    return TaskEventData(events_by_task=items, **fields)


def run(body: Callable[[TaskManager], Coroutine[Any, Any, None]], **kw: Any) -> None:
    async def main() -> None:
        manager = TaskManager(**kw)
        await manager.start(GcsInitData())
        await body(manager)
        await manager.stop()

    asyncio.run(main())


def query(manager: TaskManager, limit: int | None = None, **filters: Any) -> list[TaskEvents]:
    return manager.get_task_events(limit, Filters(**filters)).events


def test_reports_of_one_attempt_are_merged() -> None:
    async def body(manager: TaskManager) -> None:
        manager.add_task_event_data(batch(events(1, task_info=info(1))))
        manager.add_task_event_data(
            batch(events(1, state_updates=states((common_pb2.RUNNING, 5), worker_id=WORKER)))
        )
        manager.add_task_event_data(
            batch(events(1, state_updates=states((common_pb2.FINISHED, 9))))
        )
        [merged] = query(manager)
        assert merged.task_info.name == "task1"
        assert dict(merged.state_updates.state_ts_ns) == {
            common_pb2.RUNNING: 5,
            common_pb2.FINISHED: 9,
        }
        assert merged.state_updates.worker_id == WORKER
        assert latest_state(merged) == "FINISHED"

    run(body)


def test_events_without_task_info_are_stored_but_not_listed_and_bad_ids_are_skipped() -> None:
    async def body(manager: TaskManager) -> None:
        manager.add_task_event_data(batch(events(1, state_updates=states((common_pb2.RUNNING, 1)))))
        manager.add_task_event_data(batch(TaskEvents(task_id=b"", job_id=JOB1)))
        manager.add_task_event_data(batch(TaskEvents(task_id=task_id(2), job_id=b"\xff" * 4)))
        page = manager.get_task_events(None, Filters())
        assert page.events == [] and page.num_total_stored == 1 and page.num_filtered == 1

    run(body)


def test_filters_select_by_job_task_actor_name_state_and_driver() -> None:
    async def body(manager: TaskManager) -> None:
        actor = b"a" * 16
        manager.add_task_event_data(
            batch(
                events(1, task_info=info(1, name="Train"), state_updates=states((11, 1))),
                events(2, task_info=info(2, type=common_pb2.ACTOR_TASK, actor_id=actor)),
                events(3, task_info=info(3, type=common_pb2.DRIVER_TASK)),
                events(4, JOB2, task_info=info(4, JOB2), state_updates=states((8, 1))),
            )
        )

        def names(**filters: Any) -> set[str]:
            return {e.task_info.name for e in query(manager, **filters)}

        assert names() == {"Train", "task2", "task3", "task4"}
        job1 = [Filters.JobIdFilter(predicate=EQUAL, job_id=JOB1)]
        assert names(job_filters=job1) == {"Train", "task2", "task3"}
        not_job1 = [Filters.JobIdFilter(predicate=NOT_EQUAL, job_id=JOB1)]
        assert names(job_filters=not_job1) == {"task4"}
        task2 = [Filters.TaskIdFilter(predicate=EQUAL, task_id=task_id(2))]
        assert names(task_filters=task2) == {"task2"}
        actor_filter = [Filters.ActorIdFilter(predicate=EQUAL, actor_id=actor)]
        assert names(actor_filters=actor_filter) == {"task2"}
        by_name = [Filters.TaskNameFilter(predicate=EQUAL, task_name="train")]
        assert names(task_name_filters=by_name) == {"Train"}
        running = [Filters.StateFilter(predicate=EQUAL, state="running")]
        assert names(state_filters=running) == {"task4"}
        no_state = [Filters.StateFilter(predicate=EQUAL, state="NIL")]
        assert names(state_filters=no_state) == {"task2", "task3"}
        assert names(exclude_driver=True) == {"Train", "task2", "task4"}
        both = [
            Filters.TaskIdFilter(predicate=EQUAL, task_id=task_id(1)),
            Filters.TaskIdFilter(predicate=EQUAL, task_id=task_id(2)),
        ]
        assert names(task_filters=both) == set()

    run(body)


def test_an_unknown_predicate_is_an_invalid_request() -> None:
    async def body(manager: TaskManager) -> None:
        bad = [Filters.StateFilter(predicate=7, state="RUNNING")]  # type: ignore[arg-type]
        with pytest.raises(InvalidRequestError):
            query(manager, state_filters=bad)

    run(body)


def test_limit_truncates_and_counts_what_was_left_out() -> None:
    async def body(manager: TaskManager) -> None:
        for n in range(1, 6):
            manager.add_task_event_data(batch(events(n, task_info=info(n), state_updates=states())))
        page = manager.get_task_events(2, Filters())
        assert [e.task_info.name for e in page.events] == ["task5", "task4"]  # newest first
        assert page.num_truncated == 3 and page.num_status_events_dropped == 3
        assert page.num_total_stored == 5

    run(body)


def test_the_store_is_bounded_and_evicts_finished_attempts_first() -> None:
    async def body(manager: TaskManager) -> None:
        manager.add_task_event_data(batch(events(1, task_info=info(1))))
        manager.add_task_event_data(
            batch(events(2, task_info=info(2), state_updates=states((common_pb2.FINISHED, 1))))
        )
        manager.add_task_event_data(batch(events(3, task_info=info(3, type=common_pb2.ACTOR_TASK))))
        manager.add_task_event_data(batch(events(4, task_info=info(4))))  # over the bound
        assert {e.task_info.name for e in query(manager)} == {"task1", "task3", "task4"}
        manager.add_task_event_data(batch(events(5, task_info=info(5))))  # then actor tasks
        assert {e.task_info.name for e in query(manager)} == {"task1", "task4", "task5"}
        # Later events of an evicted attempt are dropped, and the loss is reported.
        manager.add_task_event_data(batch(events(2, task_info=info(2))))
        page = manager.get_task_events(None, Filters())
        assert "task2" not in {e.task_info.name for e in page.events}
        assert page.num_status_events_dropped == 2
        job1 = [Filters.JobIdFilter(predicate=EQUAL, job_id=JOB1)]
        assert (
            manager.get_task_events(None, Filters(job_filters=job1)).num_status_events_dropped == 2
        )

    run(body, max_task_events=3)


def test_attempts_dropped_by_a_worker_are_removed_and_stay_dropped() -> None:
    async def body(manager: TaskManager) -> None:
        manager.add_task_event_data(
            batch(events(1, task_info=info(1)), events(2, task_info=info(2)))
        )
        lost = TaskAttempt(task_id=task_id(1), attempt_number=0)
        manager.add_task_event_data(
            batch(dropped_task_attempts=[lost], num_profile_events_dropped=4, job_id=JOB1)
        )
        manager.add_task_event_data(batch(events(1, task_info=info(1))))
        page = manager.get_task_events(None, Filters())
        assert [e.task_info.name for e in page.events] == ["task2"]
        assert page.num_status_events_dropped == 1 and page.num_profile_events_dropped == 4

    run(body)


def test_profile_events_are_cut_to_the_newest() -> None:
    async def body(manager: TaskManager) -> None:
        def profile(*names: str) -> ProfileEvents:
            return ProfileEvents(events=[ProfileEventEntry(event_name=n) for n in names])

        manager.add_task_event_data(
            batch(events(1, task_info=info(1), profile_events=profile("a", "b")))
        )
        manager.add_task_event_data(batch(events(1, profile_events=profile("c", "d"))))
        [stored] = query(manager)
        assert [p.event_name for p in stored.profile_events.events] == ["b", "c", "d"]
        assert manager.get_task_events(None, Filters()).num_profile_events_dropped == 1

    run(body, max_profile_events_per_task=3)


def test_a_finished_job_fails_its_unfinished_attempts() -> None:
    async def body(manager: TaskManager) -> None:
        manager.add_task_event_data(
            batch(
                events(1, task_info=info(1), state_updates=states((common_pb2.RUNNING, 1))),
                events(2, task_info=info(2), state_updates=states((common_pb2.FINISHED, 2))),
                events(3, JOB2, task_info=info(3, JOB2), state_updates=states((8, 1))),
            )
        )
        job = JobTableData(job_id=JOB1, is_dead=True, end_time=1234)
        manager.on_job_finished(job)
        manager.on_job_finished(job)  # a replay changes nothing more
        await until(lambda: latest_state(_get(manager, 1)) == "FAILED")
        failed = _get(manager, 1)
        assert failed.state_updates.state_ts_ns[common_pb2.FAILED] == 1234 * 1_000_000
        assert failed.state_updates.error_info.error_type == common_pb2.WORKER_DIED
        assert latest_state(_get(manager, 2)) == "FINISHED"
        assert latest_state(_get(manager, 3, JOB2)) == "RUNNING"

    run(body, job_done_delay_s=0)


def test_a_dead_worker_fails_the_attempts_it_ran() -> None:
    async def body(manager: TaskManager) -> None:
        manager.add_task_event_data(
            batch(
                events(1, task_info=info(1), state_updates=states((8, 1), worker_id=WORKER)),
                events(2, task_info=info(2), state_updates=states((8, 1), worker_id=b"x" * 28)),
            )
        )
        dead = WorkerTableData(
            worker_address=Address(worker_id=WORKER),
            exit_type=common_pb2.SYSTEM_ERROR,
            exit_detail="segfault",
            end_time_ms=77,
        )
        manager.on_worker_dead(dead)
        await until(lambda: latest_state(_get(manager, 1)) == "FAILED")
        error = _get(manager, 1).state_updates.error_info
        assert "segfault" in error.error_message and WORKER.hex() in error.error_message
        assert latest_state(_get(manager, 2)) == "RUNNING"

    run(body, worker_dead_delay_s=0)


def test_a_restart_starts_empty() -> None:
    async def body(manager: TaskManager) -> None:
        manager.add_task_event_data(batch(events(1, task_info=info(1))))
        await manager.stop()
        await manager.start(GcsInitData())
        assert query(manager) == []

    run(body)


# -- AddEvents ----------------------------------------------------------------------------


def _stamp(ns: int) -> Timestamp:
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def test_call_string_follows_rays_short_names() -> None:
    def py(module: str, cls: str, fn: str) -> FunctionDescriptor:
        return FunctionDescriptor(
            python_function_descriptor=PythonFunctionDescriptor(
                module_name=module, class_name=cls, function_name=fn
            )
        )

    assert call_string(py("m", "", "m.f")) == "f"
    assert call_string(py("m", "m.Actor", "method")) == "Actor.method"
    assert call_string(FunctionDescriptor()) == ""


def test_add_events_converts_task_events_and_drops_other_kinds() -> None:
    async def body(manager: TaskManager) -> None:
        exporter = EventExportManager(manager)
        await exporter.start(GcsInitData())
        func = FunctionDescriptor(
            python_function_descriptor=PythonFunctionDescriptor(function_name="mod.work")
        )
        definition = ev.TaskDefinitionEvent(
            task_id=task_id(1),
            task_attempt=0,
            task_type=common_pb2.NORMAL_TASK,
            task_name="work",
            task_func=func,
            job_id=JOB1,
            required_resources={"CPU": 1.0},
        )
        lifecycle = ev.TaskLifecycleEvent(
            task_id=task_id(1),
            task_attempt=0,
            job_id=JOB1,
            worker_id=WORKER,
            worker_pid=42,
            state_transitions=[
                ev.TaskLifecycleEvent.StateTransition(
                    state=common_pb2.RUNNING, timestamp=_stamp(1_500_000_001)
                )
            ],
        )
        actor_task = ev.ActorTaskDefinitionEvent(
            task_id=task_id(2), actor_task_name="Actor.m", job_id=JOB1, actor_id=b"a" * 16
        )
        lost = TaskAttempt(task_id=task_id(3), attempt_number=1)
        data = ev.RayEventsData(
            events=[
                RayEvent(
                    event_type=RayEvent.TASK_DEFINITION_EVENT, task_definition_event=definition
                ),
                RayEvent(event_type=RayEvent.TASK_LIFECYCLE_EVENT, task_lifecycle_event=lifecycle),
                RayEvent(
                    event_type=RayEvent.ACTOR_TASK_DEFINITION_EVENT,
                    actor_task_definition_event=actor_task,
                ),
                RayEvent(event_type=RayEvent.NODE_DEFINITION_EVENT),
            ],
            task_events_metadata=ev.TaskEventsMetadata(dropped_task_attempts=[lost]),
        )
        assert exporter.add_events(data) == 3
        assert exporter.dropped == {"NODE_DEFINITION_EVENT": 1}
        task = _get(manager, 1)
        assert task.task_info.func_or_class_name == "work"
        assert dict(task.task_info.required_resources) == {"CPU": 1.0}
        assert task.state_updates.state_ts_ns[common_pb2.RUNNING] == 1_500_000_001
        assert task.state_updates.worker_pid == 42 and task.state_updates.worker_id == WORKER
        actor = _get(manager, 2)
        assert actor.task_info.type == common_pb2.ACTOR_TASK
        assert actor.task_info.actor_id == b"a" * 16
        page = manager.get_task_events(None, Filters())
        assert page.num_status_events_dropped == 1

    run(body)


def _get(manager: TaskManager, n: int, job: bytes = JOB1) -> TaskEvents:
    only = [Filters.TaskIdFilter(predicate=EQUAL, task_id=task_id(n, job))]
    [found] = query(manager, task_filters=only)
    return found
