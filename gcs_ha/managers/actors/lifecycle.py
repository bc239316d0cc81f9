"""The actor state machine's transitions (the heart of Ray's GcsActorManager): `restart`,
`destroy`, `on_created`, `on_worker_dead`, `on_node_dead`. Every change is made in
memory first, then stored (`writer`), then published and replied to. States and
transitions: actors/DESIGN.md, "Mechanism" and "Module notes".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from gcs_ha.errors import GcsHaError, InvalidStateError
from gcs_ha.managers.actors import death
from gcs_ha.managers.actors.gcs_actor import (
    ALIVE,
    DEAD,
    DEPENDENCIES_UNREADY,
    RESTARTING,
    GcsActor,
    is_restartable,
)
from gcs_ha.managers.actors.lease_intents import ActorLeaseIntents
from gcs_ha.managers.actors.owner_watch import OwnerWatch
from gcs_ha.managers.actors.registry import ActorRegistry
from gcs_ha.managers.actors.scheduler import (
    ActorScheduler,
    NodeDirectory,
    ResourceViews,
    SchedulerHandlers,
)
from gcs_ha.managers.actors.writer import ActorWriter, WriteTask
from gcs_ha.managers.function_manager import FunctionManager
from gcs_ha.managers.manager import BackgroundTasks
from gcs_ha.managers.ports import CoreWorkerClientPool, Publisher, RayletClientPool
from gcs_ha.managers.pubsub_manager import publish_actor
from gcs_ha.managers.runtime_env_manager import RuntimeEnvManager
from gcs_ha.proto.ray.common_pb2 import (
    INTENDED_USER_EXIT,
    SYSTEM_ERROR,
    USER_ERROR,
    ActorDeathCause,
    Address,
    ObjectReferenceCount,
)
from gcs_ha.proto.ray.core_worker_pb2 import PushTaskReply
from gcs_ha.proto.ray.gcs_pb2 import (
    ActorTableData,
    GcsNodeInfo,
    PreviousActorIncarnation,
    WorkerTableData,
)
from gcs_ha.proto.ray.node_manager_pb2 import RequestWorkerLeaseReply
from gcs_ha.storage.tables import GcsTableStorage

log = logging.getLogger(__name__)

MAX_PREVIOUS_INCARNATIONS = 100  # Ray 2.60's maximum_actor_previous_incarnations (assumed)
FailureType = RequestWorkerLeaseReply.SchedulingFailureType


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class ActorDeps:
    """What the actor manager works with (built by gcs_ha.server.assembly)."""

    tables: GcsTableStorage
    publisher: Publisher
    nodes: NodeDirectory
    views: ResourceViews
    raylets: RayletClientPool
    workers: CoreWorkerClientPool
    functions: FunctionManager
    runtime_envs: RuntimeEnvManager


@dataclass
class CreateOutcome:
    """How a CreateActor call ended: created (address, borrowed refs), cancelled (the
    death cause) or the constructor raised (its error)."""

    address: Address | None = None
    borrowed_refs: list[ObjectReferenceCount] = field(default_factory=list)
    death_cause: ActorDeathCause | None = None
    creation_error: str | None = None


class ActorLifecycle:
    """The transitions (actors/DESIGN.md, "Module notes"), over the registry."""

    def __init__(
        self,
        deps: ActorDeps,
        registry: ActorRegistry,
        tasks: BackgroundTasks,
        *,
        scheduler_options: dict[str, Any] | None = None,
        owner_retry_s: float = 1.0,
    ) -> None:
        self._deps = deps
        self._registry = registry
        self._tasks = tasks
        intents = ActorLeaseIntents(deps.tables.internal_kv)
        self.writer = ActorWriter(deps.tables, intents, tasks)
        handlers = SchedulerHandlers(self._persist_granted, self.on_created, self.on_failed)
        self.scheduler = ActorScheduler(
            deps.nodes,
            deps.views,
            deps.raylets,
            deps.workers,
            intents=intents,
            handlers=handlers,
            **(scheduler_options or {}),
        )
        self.owners = OwnerWatch(
            deps.workers, deps.raylets, deps.nodes, self._on_refs_released, retry_s=owner_retry_s
        )
        self.creating: dict[bytes, list[asyncio.Future[CreateOutcome]]] = {}
        self.lineage: dict[bytes, asyncio.Future[None]] = {}
        self.pg_cleaner: Callable[[bytes], object] = lambda _: None

    # -- admission and references ------------------------------------------------------

    def admit(self, actor: GcsActor) -> None:
        """Index an actor (new or loaded) and take its references: the job's exported
        code, its runtime env URIs (detached) or its owner's watch (owned)."""
        registry = self._registry
        registry.registered[actor.actor_id] = actor
        registry.add_name(actor)
        if actor.state == DEPENDENCIES_UNREADY:
            registry.add_unresolved(actor)
        elif actor.state == ALIVE:
            registry.add_created(actor)
        self._deps.functions.add_job_reference(actor.job_id, actor.actor_id)
        if actor.is_detached:
            info = actor.spec.runtime_env_info
            self._deps.runtime_envs.add_uri_reference(actor.actor_id.hex(), info)
        else:
            registry.add_owned(actor)
            self.owners.watch(actor.actor_id, actor.owner_address)
        actor.compact()  # parsed again when it is scheduled

    def unadmit(self, actor: GcsActor) -> None:
        """Undo `admit` of a registration that was not stored (the owner replays it)."""
        if self._registry.get(actor.actor_id) is not actor:
            return
        del self._registry.registered[actor.actor_id]
        self._registry.remove_name(actor)
        self._registry.remove_unresolved(actor)
        self._release_references(actor)

    def _release_references(self, actor: GcsActor) -> None:
        functions, job_id, holder = self._deps.functions, actor.job_id, actor.actor_id
        release = _logged(lambda: functions.remove_job_reference(job_id, holder), "code release")
        self._tasks.spawn(release, "function-reference")
        if actor.is_detached:
            self._deps.runtime_envs.remove_uri_reference(actor.actor_id.hex())
        else:
            self._registry.remove_owned(actor)
            self.owners.unwatch(actor.actor_id)

    def _on_refs_released(self, actor_id: bytes) -> None:
        actor = self._registry.get(actor_id)
        if actor is not None and not actor.is_detached and self._registry.owns(actor):
            self.destroy(actor_id, death.ref_deleted(actor), force_kill=False)

    # -- deaths of workers and nodes -------------------------------------------------------

    def on_worker_dead(self, worker: WorkerTableData) -> None:
        """A worker or driver exited (Ray's OnWorkerDead)."""
        address = worker.worker_address
        node_id, worker_id = bytes(address.node_id), bytes(address.worker_id)
        registry, exit_type, ip = self._registry, worker.exit_type, address.ip_address
        crashed = "Owner's worker process has crashed."
        for child in registry.children_of(node_id, worker_id) + registry.unresolved_of(
            node_id, worker_id
        ):
            cause = death.owner_died(registry.get(child), worker_id, exit_type, crashed, ip)
            self.destroy(child, cause)
        actor_id = registry.pop_created(node_id, worker_id)
        if actor_id is None:
            actor_id = self.scheduler.cancel_on_worker(node_id, worker_id)
        if actor_id is None:
            return
        if worker.HasField("creation_task_exception"):
            cause = death.creation_task_failed(worker.creation_task_exception)
        else:
            cause = death.worker_died(registry.get(actor_id), exit_type, worker.exit_detail)
        self.restart(actor_id, exit_type not in (INTENDED_USER_EXIT, USER_ERROR), cause)

    def on_node_dead(self, node: GcsNodeInfo) -> None:
        """A node died (Ray's OnNodeDead)."""
        registry = self._registry
        node_id, ip = bytes(node.node_id), node.node_manager_address
        crashed = "Owner's node has crashed."
        for owner_id, child in registry.owners_on(node_id):
            cause = death.owner_died(registry.get(child), owner_id, SYSTEM_ERROR, crashed, ip)
            self.destroy(child, cause)
        moving = self.scheduler.cancel_on_node(node_id) + registry.pop_created_on(node_id)
        if moving:
            log.info("node %s died: restarting %d actor(s)", node_id.hex(), len(moving))
        for actor_id in moving:
            self.restart(actor_id, True, death.node_died(registry.get(actor_id), node))
        for owner_id, children in list(registry.unresolved.get(node_id, {}).items()):
            for child in list(children):
                cause = death.owner_died(registry.get(child), owner_id, SYSTEM_ERROR, crashed, ip)
                self.destroy(child, cause)

    def set_preempted(self, node_id: bytes) -> None:
        """A drain of the node was accepted: its actors' next restart is free."""
        for actor_id in list(self._registry.created.get(bytes(node_id), {}).values()):
            actor = self._registry.get(actor_id)
            if actor is not None:
                actor.data.preempted = True
                self.writer.write(actor, then=self._publisher_of(actor))

    # -- kill, destroy, restart ------------------------------------------------------------

    def kill(self, actor: GcsActor, force_kill: bool) -> None:
        """`ray.kill` without no_restart (Ray's KillActor): the actor restarts if it can."""
        if actor.state in (DEAD, DEPENDENCIES_UNREADY):
            return
        cause = death.killed_by_application(actor)
        if actor.worker_id:
            self._notify_raylet_kill(actor, cause, force_kill)
        if self._registry.is_created(actor):
            return  # the worker's death (reported by its raylet) restarts it
        self._cancel_scheduling(actor)
        self.restart(actor.actor_id, True, cause)

    def destroy(
        self, actor_id: bytes, cause: ActorDeathCause, force_kill: bool = True
    ) -> WriteTask | None:
        """Ray's DestroyActor; returns the write (None for an unknown actor)."""
        self._fail_lineage_waiter(actor_id)
        actor = self._registry.get(actor_id)
        if actor is None:
            return None
        self.pg_cleaner(actor.actor_id)
        if actor.state == DEPENDENCIES_UNREADY:
            self._registry.remove_unresolved(actor)
        elif actor.state != DEAD:
            if actor.worker_id:
                self._notify_raylet_kill(actor, cause, force_kill)
            if self._registry.pop_created(actor.node_id, actor.worker_id) is None:
                self._cancel_scheduling(actor)
        _bury(actor.data, cause)
        final = not is_restartable(actor.data)
        if final:
            self._forget(actor)
        delta = actor.delta()
        outcome = CreateOutcome(death_cause=_copy_cause(actor.data.death_cause))

        def announce() -> None:
            publish_actor(self._deps.publisher, actor.actor_id, delta)
            self.resolve_creation(actor.actor_id, outcome)

        return self.writer.write(actor, clear_intent=True, delete_spec=final, then=announce)

    def _forget(self, actor: GcsActor) -> None:
        """Move a destroyed actor from the registry to the destroyed cache."""
        registry = self._registry
        del registry.registered[actor.actor_id]
        registry.pending.pop(actor.actor_id, None)
        registry.remove_name(actor)
        self._release_references(actor)
        self.writer.delete_records(registry.add_destroyed(actor.data))

    def restart(
        self, actor_id: bytes, need_reschedule: bool, cause: ActorDeathCause
    ) -> WriteTask | None:
        """Ray's RestartActor; returns the write (None for an unknown actor)."""
        actor = self._registry.get(actor_id)
        if actor is None:
            return None
        self.pg_cleaner(actor.actor_id)
        data = actor.data
        if not _restarts_left(data, need_reschedule):
            return self._die(actor, cause)
        if data.preempted:
            data.num_restarts_due_to_node_preemption += 1
        data.num_restarts += 1
        _remember_incarnation(data)
        data.state = RESTARTING
        actor.spec.attempt_number = data.num_restarts
        actor.set_address(None)
        data.ClearField("resource_mapping")
        log.info("actor %s restarting (restart %d)", actor_id.hex(), data.num_restarts)
        task = self.writer.write(actor, spec=True, then=self._publisher_of(actor))
        self.scheduler.schedule(actor)
        return task

    def _die(self, actor: GcsActor, cause: ActorDeathCause) -> WriteTask:
        """No restart left: DEAD (an owned actor stays registered until its owner lets
        go; a detached one is destroyed)."""
        data = actor.data
        data.state = DEAD
        data.death_cause.CopyFrom(cause)
        data.end_time = now_ms()
        data.timestamp = data.end_time
        actor.compact()
        log.info("actor %s is dead, no restart left", actor.actor_id.hex())
        delta, outcome = actor.delta(), CreateOutcome(death_cause=_copy_cause(cause))

        def announce() -> None:
            if actor.is_detached:
                self.destroy(actor.actor_id, cause)
            publish_actor(self._deps.publisher, actor.actor_id, delta)
            self.resolve_creation(actor.actor_id, outcome)

        return self.writer.write(actor, clear_intent=True, delete_spec=True, then=announce)

    # -- the scheduler's callbacks -----------------------------------------------------

    def on_created(self, actor: GcsActor, reply: PushTaskReply) -> None:
        """The constructor ran (Ray's OnActorCreationSuccess)."""
        if self._registry.get(actor.actor_id) is not actor or actor.state == DEAD:
            return
        if reply.is_application_error:
            failed = CreateOutcome(creation_error=reply.task_execution_error)
            self.resolve_creation(actor.actor_id, failed)
        data = actor.data
        data.timestamp = now_ms()
        if actor.state != RESTARTING:
            data.start_time = int(data.timestamp)
        data.state = ALIVE
        data.node_id = actor.node_id
        data.repr_name = reply.actor_repr_name
        data.preempted = False
        self._registry.add_created(actor)
        actor.compact()
        address = Address()
        address.CopyFrom(data.address)
        created = CreateOutcome(address=address, borrowed_refs=list(reply.borrowed_refs))
        publish = self._publisher_of(actor)

        def announce() -> None:
            publish()
            self.resolve_creation(actor.actor_id, created)

        self.writer.write(actor, clear_intent=True, then=announce)

    def on_failed(self, actor: GcsActor, failure_type: int, message: str) -> None:
        """No node for the actor (kept pending), or its lease was cancelled for good."""
        if failure_type == FailureType.SCHEDULING_FAILED:
            self._registry.pending[actor.actor_id] = actor
        elif failure_type != FailureType.SCHEDULING_CANCELLED_INTENDED:
            self.destroy(actor.actor_id, death.scheduling_failed(failure_type, message))

    async def _persist_granted(self, actor: GcsActor) -> None:
        error = await self.writer.write(actor)
        if error is not None:
            raise error

    # -- waiters ---------------------------------------------------------------------------

    def resolve_creation(self, actor_id: bytes, outcome: CreateOutcome) -> None:
        for future in self.creating.pop(actor_id, []):
            if not future.done():
                future.set_result(outcome)

    def fail_waiters(self, error: GcsHaError) -> None:
        """Every call still waiting gets `error` (the manager stops)."""
        futures: list[asyncio.Future[Any]] = [f for fs in self.creating.values() for f in fs]
        futures.extend(self.lineage.values())
        for future in futures:
            if not future.done():
                future.set_exception(error)
        self.creating.clear()
        self.lineage.clear()

    def _fail_lineage_waiter(self, actor_id: bytes) -> None:
        future = self.lineage.get(bytes(actor_id))
        if future is not None and not future.done():
            future.set_exception(InvalidStateError("Actor is permanently dead."))

    # -- internals -------------------------------------------------------------------------

    def _cancel_scheduling(self, actor: GcsActor) -> None:
        """Ray's CancelActorInScheduling: stop whatever step the actor is in."""
        if actor.worker_id and self.scheduler.cancel_on_worker(actor.node_id, actor.worker_id):
            return
        if self._registry.pending.pop(actor.actor_id, None) is None:
            self.scheduler.cancel_on_leasing(actor.node_id, actor.actor_id)

    def _notify_raylet_kill(self, actor: GcsActor, cause: ActorDeathCause, force: bool) -> None:
        node = self._deps.nodes.get_alive_node(actor.node_id)
        if node is None:
            return
        raylets, actor_id, worker_id = self._deps.raylets, actor.actor_id, actor.worker_id

        def kill() -> Coroutine[Any, Any, None]:
            return raylets.kill_local_actor(node, actor_id, worker_id, force, cause)

        self._tasks.spawn(_logged(kill, f"kill of actor {actor_id.hex()}"), "kill")

    def _publisher_of(self, actor: GcsActor) -> Callable[[], None]:
        delta = actor.delta()
        return lambda: publish_actor(self._deps.publisher, actor.actor_id, delta)


def _bury(data: ActorTableData, cause: ActorDeathCause) -> None:
    """Mark a record DEAD with `cause` (a restartable OUT_OF_SCOPE death becomes a final
    REF_DELETED one when the references go too)."""
    time_ms = now_ms()
    if data.state != DEAD:
        data.state = DEAD
        data.end_time = time_ms
        data.death_cause.CopyFrom(cause)
    elif (
        death.reason_of(data.death_cause) == death.Reason.OUT_OF_SCOPE
        and death.reason_of(cause) == death.Reason.REF_DELETED
    ):
        data.death_cause.CopyFrom(cause)
    data.timestamp = time_ms


def _restarts_left(data: ActorTableData, need_reschedule: bool) -> bool:
    if not need_reschedule:
        return False
    if data.max_restarts == -1:
        return True
    used = data.num_restarts - data.num_restarts_due_to_node_preemption
    return data.max_restarts - used > 0 or (data.max_restarts > 0 and data.preempted)


def _remember_incarnation(data: ActorTableData) -> None:
    if not data.address.worker_id:
        return
    data.previous_incarnations.append(
        PreviousActorIncarnation(worker_id=data.address.worker_id, node_id=data.address.node_id)
    )
    while len(data.previous_incarnations) > MAX_PREVIOUS_INCARNATIONS:
        del data.previous_incarnations[0]


async def _logged(work: Callable[[], Coroutine[Any, Any, object]], what: str) -> None:
    try:
        await work()
    except GcsHaError as exc:
        log.info("%s: %s", what, exc)


def _copy_cause(cause: ActorDeathCause) -> ActorDeathCause:
    copy = ActorDeathCause()
    copy.CopyFrom(cause)
    return copy
