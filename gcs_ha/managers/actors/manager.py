"""The actor manager (Ray's GcsActorManager): the ActorInfoGcsService calls (register,
create, kill, out of scope, lineage restart, reads) over every actor's lifecycle,
durable in the actor table and the actor task spec table; `start` is Ray's GCS restart
path. States, failover and replays: actors/DESIGN.md.

Errors: InvalidRequestError (not an actor creation task, no namespace),
AlreadyExistsError (a name taken in its namespace), InvalidStateError (CreateActor of a
destroyed actor; lineage restart of a permanently dead one), NotFoundError (kill of an
unknown actor, unknown name), UnavailableError (the manager stopped while a call waited;
a write failed: the caller retries on the next leader).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from gcs_ha.errors import (
    AlreadyExistsError,
    GcsHaError,
    InvalidRequestError,
    InvalidStateError,
    NotFoundError,
    UnavailableError,
)
from gcs_ha.managers.actors import death
from gcs_ha.managers.actors import queries as actor_queries
from gcs_ha.managers.actors.gcs_actor import (
    ALIVE,
    DEAD,
    DEPENDENCIES_UNREADY,
    JOB_ID_BYTES,
    PENDING_CREATION,
    RESTARTING,
    GcsActor,
    check_creation_task,
    is_restartable,
    state_name,
)
from gcs_ha.managers.actors.lifecycle import ActorDeps, ActorLifecycle, CreateOutcome, now_ms
from gcs_ha.managers.actors.queries import ActorFilters, ActorPage
from gcs_ha.managers.actors.registry import MAX_DESTROYED, ActorRegistry
from gcs_ha.managers.actors.scheduler import ActorScheduler
from gcs_ha.managers.actors.writer import WriteTask
from gcs_ha.managers.manager import BackgroundTasks, GcsInitData
from gcs_ha.managers.pubsub_manager import publish_actor, publish_error
from gcs_ha.managers.system_config import Setting, apply_settings
from gcs_ha.proto.ray.common_pb2 import Address, TaskSpec
from gcs_ha.proto.ray.gcs_pb2 import ActorTableData, ErrorTableData, GcsNodeInfo, WorkerTableData

__all__ = ["ActorDeps", "ActorFilters", "ActorManager", "ActorPage", "CreateOutcome"]

log = logging.getLogger(__name__)

_UUID = re.compile(r"[a-f0-9]{8}-[a-f0-9]{4}-4[a-f0-9]{3}-[89aAbB][a-f0-9]{3}-[a-f0-9]{12}")
NIL_ID_BYTE = 0xFF

SETTINGS = {  # Ray's system config
    "maximum_gcs_destroyed_actor_cached_count": Setting("max_destroyed"),
}


class ActorManager:
    """Serves ActorInfoGcsService; see the module docstring. A Manager ("actor")."""

    def __init__(
        self,
        deps: ActorDeps,
        *,
        max_destroyed: int = MAX_DESTROYED,
        scheduler_options: dict[str, Any] | None = None,
        owner_retry_s: float = 1.0,
    ) -> None:
        self._deps = deps
        self.registry = ActorRegistry(max_destroyed)
        self._tasks = BackgroundTasks("actor")
        self._life = ActorLifecycle(
            deps,
            self.registry,
            self._tasks,
            scheduler_options=scheduler_options,
            owner_retry_s=owner_retry_s,
        )
        self._registering: dict[bytes, asyncio.Future[bool]] = {}

    @property
    def name(self) -> str:
        return "actor"

    @property
    def scheduler(self) -> ActorScheduler:
        return self._life.scheduler

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, init: GcsInitData) -> None:
        """Ray's Initialize: load the actors that can live and resume their creations."""
        self._clear()
        await self.scheduler.start(init)
        doomed_specs = [key for key in init.actor_task_specs if key not in init.actors]
        dead: list[ActorTableData] = []
        for key, data in init.actors.items():
            actor_id = bytes(key)
            spec = init.actor_task_specs.get(actor_id)
            if spec is not None and _should_load(init, actor_id, data):
                self._life.admit(GcsActor.from_tables(data, spec))
            else:
                dead.append(data)
                if spec is not None:
                    doomed_specs.append(actor_id)
        self._life.writer.delete_specs(doomed_specs)
        evicted: list[bytes] = []
        for data in sorted(dead, key=lambda record: record.timestamp):  # oldest first
            evicted.extend(self.registry.add_destroyed(data))
        self._life.writer.delete_records(evicted)
        for actor in list(self.registry.registered.values()):
            if actor.state in (PENDING_CREATION, RESTARTING):
                log.info("resuming actor %s (%s)", actor.actor_id.hex(), state_name(actor.state))
                self.scheduler.reschedule(actor)
        self.scheduler.drop_unadopted()
        await self._catch_up_on_deaths(init)
        log.info("actor manager started with %d live actors", len(self.registry.registered))

    async def _catch_up_on_deaths(self, init: GcsInitData) -> None:
        """Deaths the previous leader stored (node table, worker table) but may not have
        acted on before it died (its listeners' writes were lost): apply them now, as the
        node-removed and worker-dead listeners would have. Replays are harmless."""
        actors = list(self.registry.registered.values())
        referenced = {a.node_id for a in actors if a.worker_id} | {a.owner_node_id for a in actors}
        for node_id in sorted(referenced):
            node = init.nodes.get(node_id)
            if node is not None and node.state == GcsNodeInfo.DEAD:
                self._life.on_node_dead(node)
        workers = {a.worker_id for a in actors if a.worker_id}
        workers |= {a.owner_worker_id for a in actors if not a.is_detached}
        records = await self._deps.tables.worker_table.multi_get(sorted(workers - {b""}))
        for record in records.values():
            if not record.is_alive:
                self._life.on_worker_dead(record)

    async def stop(self) -> None:
        """Stop scheduling and owner polls; calls still waiting get UnavailableError."""
        await self.scheduler.stop()
        await self._life.owners.stop()
        await self._tasks.cancel_all()
        error = UnavailableError("the GCS leader stepped down; retry")
        self._life.fail_waiters(error)
        for future in self._registering.values():
            if not future.done():
                future.set_exception(error)
        self._clear()

    def _clear(self) -> None:
        self.registry.clear()
        self._registering.clear()
        self._life.creating.clear()
        self._life.lineage.clear()

    # -- hooks for the other managers (wired in gcs_ha.server.assembly) ---------------

    def set_placement_group_cleaner(self, cleaner: Callable[[bytes], object]) -> None:
        """Called with an actor id whenever the actor dies or restarts (Ray's
        destroy_owned_placement_group_if_needed; must be idempotent)."""
        self._life.pg_cleaner = cleaner

    def workers_in_use(self, node_id: bytes) -> list[bytes]:
        """The actor workers of a node that ReleaseUnusedActorWorkers must spare."""
        return self.registry.workers_in_use(node_id)

    def on_node_added(self, node: GcsNodeInfo) -> None:
        """A node registered: schedule the actors that found no node."""
        pending = list(self.registry.pending.values())
        self.registry.pending.clear()
        for actor in pending:
            self.scheduler.schedule(actor)

    def on_node_dead(self, node: GcsNodeInfo) -> None:
        """A node died: its actors restart elsewhere or die; actors it owned die."""
        self._life.on_node_dead(node)

    def on_worker_dead(self, worker: WorkerTableData) -> None:
        """A worker or driver exited: its actor restarts or dies; actors it owned die."""
        self._life.on_worker_dead(worker)

    def apply_system_config(self, config: Mapping[str, Any]) -> None:
        """Ray's settings of this manager in the head's system config (SETTINGS)."""
        apply_settings(self.registry, config, SETTINGS)

    def set_preempted_and_publish(self, node_id: bytes) -> None:
        """A drain of the node was requested: its actors' next restart is free."""
        self._life.set_preempted(node_id)

    # -- RegisterActor, CreateActor ----------------------------------------------------

    async def register_actor(self, spec: TaskSpec) -> bool:
        """RegisterActor; False when the actor was destroyed before its registration was
        stored (Ray answers SchedulingCancelled)."""
        actor_id = check_creation_task(spec)
        if actor_id in self.registry.registered:
            pending = self._registering.get(actor_id)
            return await asyncio.shield(pending) if pending is not None else True
        if actor_id in self.registry.destroyed:
            log.info("RegisterActor of destroyed actor %s (a replay)", actor_id.hex())
            return True
        actor = GcsActor.from_task_spec(spec)
        if not actor.namespace:
            raise InvalidRequestError("an actor creation task must carry a ray_namespace")
        self._claim_name(actor)
        self._life.admit(actor)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._registering[actor_id] = future
        try:
            registered = await self._store_registration(actor)
            future.set_result(registered)
            return registered
        except GcsHaError as exc:
            future.set_exception(exc)
            raise
        finally:
            self._registering.pop(actor_id, None)
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # mark retrieved

    async def _store_registration(self, actor: GcsActor) -> bool:
        error = await asyncio.shield(self._life.writer.write(actor, spec=True))
        if error is not None:
            self._life.unadmit(actor)
            raise UnavailableError(f"actor registration not stored: {error}") from error
        if self.registry.get(actor.actor_id) is not actor:
            return False  # destroyed while its registration was being stored
        publish_actor(self._deps.publisher, actor.actor_id, actor.snapshot())
        return True

    async def create_actor(self, spec: TaskSpec) -> CreateOutcome:
        """CreateActor: schedule the actor; returns once its constructor ran (and ALIVE
        is stored) or its creation was cancelled."""
        actor_id = check_creation_task(spec)
        actor = self.registry.get(actor_id)
        if actor is None:
            raise InvalidStateError("Actor may be already destroyed.")
        if actor.state == ALIVE:
            address = Address()
            address.CopyFrom(actor.data.address)
            return CreateOutcome(address=address)
        future: asyncio.Future[CreateOutcome] = asyncio.get_running_loop().create_future()
        waiters = self._life.creating.setdefault(actor_id, [])
        waiters.append(future)
        if actor.state == DEPENDENCIES_UNREADY:
            self._begin_creation(actor, spec)
        try:
            return await future
        finally:
            if future in waiters:
                waiters.remove(future)
            if not waiters and self._life.creating.get(actor_id) is waiters:
                del self._life.creating[actor_id]

    def _begin_creation(self, registered: GcsActor, spec: TaskSpec) -> None:
        actor = GcsActor.from_task_spec(spec)  # its dependencies are resolved by now
        actor.data.ray_namespace = registered.namespace
        actor.data.state = PENDING_CREATION
        actor.spec.dependency_resolution_timestamp_ms = now_ms()
        self.registry.remove_unresolved(registered)
        self.registry.registered[actor.actor_id] = actor
        publish_actor(self._deps.publisher, actor.actor_id, actor.snapshot())
        self._life.writer.write(actor, spec=True)
        self.scheduler.schedule(actor)

    def _claim_name(self, actor: GcsActor) -> None:
        if not actor.name:
            return
        if self.registry.named_actor(actor.namespace, actor.name) is not None:
            taken = f"Actor with name '{actor.name}' already exists in the namespace"
            raise AlreadyExistsError(f"{taken} {actor.namespace}")
        if actor.is_detached and _UUID.fullmatch(actor.namespace):
            self._warn_anonymous_namespace(actor)

    def _warn_anonymous_namespace(self, actor: GcsActor) -> None:
        message = (
            "It looks like you're creating a detached actor in an anonymous namespace. In "
            "order to access this actor in the future, you will need to explicitly connect "
            f'to this namespace with ray.init(namespace="{actor.namespace}", ...)'
        )
        log.warning(message)
        error = ErrorTableData(
            job_id=actor.job_id,
            type="detached_actor_anonymous_namespace",
            error_message=message,
            timestamp=float(now_ms()),
        )
        publish_error(self._deps.publisher, actor.job_id.hex().encode(), error)

    # -- KillActorViaGcs, ReportActorOutOfScope, RestartActorForLineageReconstruction --

    async def kill_actor_via_gcs(self, actor_id: bytes, force_kill: bool, no_restart: bool) -> None:
        """KillActorViaGcs (`ray.kill`). An actor already destroyed counts as killed (a
        replay); an unknown one is NotFound."""
        actor = self.registry.get(actor_id)
        if actor is None:
            if bytes(actor_id) in self.registry.destroyed:
                return
            raise NotFoundError(f"Could not find actor with ID {bytes(actor_id).hex()}.")
        if no_restart:
            cause = death.killed_by_application(actor)
            await _stored(self._life.destroy(actor.actor_id, cause, force_kill))
        else:
            self._life.kill(actor, force_kill)

    async def report_actor_out_of_scope(self, actor_id: bytes, lineage_restarts: int) -> None:
        """ReportActorOutOfScope: the owner dropped every handle; the actor is destroyed
        (restartable for lineage reconstruction). Stale and unknown reports are OK."""
        actor = self.registry.get(actor_id)
        if actor is None:
            return
        if actor.data.num_restarts_due_to_lineage_reconstruction > lineage_restarts:
            log.info("stale out-of-scope report for actor %s", actor.actor_id.hex())
            return
        cause = death.out_of_scope(actor)
        await _stored(self._life.destroy(actor.actor_id, cause, force_kill=False))

    async def restart_actor_for_lineage_reconstruction(
        self, actor_id: bytes, lineage_restarts: int
    ) -> None:
        """RestartActorForLineageReconstruction: bring an out-of-scope actor back."""
        actor_id = bytes(actor_id)
        actor = self.registry.get(actor_id)
        if actor is None:
            raise InvalidStateError("Actor is permanently dead.")
        pending = self._life.lineage.get(actor_id)
        if pending is not None:
            await asyncio.shield(pending)
            return
        current = actor.data.num_restarts_due_to_lineage_reconstruction
        if lineage_restarts <= current:
            return  # a replay of a restart already done
        if lineage_restarts != current + 1 or not is_restartable(actor.data):
            raise InvalidStateError(
                f"Actor {actor_id.hex()} cannot be restarted for lineage reconstruction "
                f"(state {state_name(actor.state)}, restart {lineage_restarts} after {current})"
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._life.lineage[actor_id] = future
        actor.data.num_restarts_due_to_lineage_reconstruction = current + 1
        try:
            await _stored(self._life.restart(actor_id, True, death.out_of_scope(actor)))
            if not future.done():
                future.set_result(None)
        except GcsHaError as exc:
            if not future.done():
                future.set_exception(exc)
        finally:
            if self._life.lineage.get(actor_id) is future:
                del self._life.lineage[actor_id]
            if not future.done():
                future.set_exception(UnavailableError("lineage restart interrupted"))
        await future  # a destroy meanwhile answers "permanently dead"

    # -- reads ---------------------------------------------------------------------------

    def get_actor_info(self, actor_id: bytes) -> ActorTableData | None:
        """GetActorInfo: the actor's record (registered or destroyed), or None."""
        record = self.registry.record(actor_id)
        if record is None:
            return None
        copy = ActorTableData()
        copy.CopyFrom(record)
        return copy

    def get_named_actor_info(self, name: str, namespace: str) -> tuple[ActorTableData, TaskSpec]:
        """GetNamedActorInfo: the record and creation task of a registered named actor."""
        actor_id = self.registry.named_actor(namespace, name)
        actor = self.registry.get(actor_id) if actor_id is not None else None
        if actor is None:
            raise NotFoundError(f"Actor with name '{name}' was not found.")
        spec = TaskSpec()
        spec.CopyFrom(actor.spec)
        return actor.snapshot(), spec

    def list_named_actors(self, all_namespaces: bool, namespace: str) -> list[tuple[str, str]]:
        """ListNamedActors: (namespace, name) of named actors that are not DEAD."""
        return actor_queries.list_named_actors(self.registry, all_namespaces, namespace)

    async def get_all_actor_info(
        self, *, show_dead_jobs: bool, limit: int | None, filters: ActorFilters | None
    ) -> ActorPage:
        """GetAllActorInfo (see actor_queries.get_all_actor_info)."""
        return await actor_queries.get_all_actor_info(
            self.registry,
            self._deps.tables,
            show_dead_jobs=show_dead_jobs,
            limit=limit,
            filters=filters,
        )

    def num_alive(self) -> int:
        """How many registered actors are ALIVE."""
        return sum(1 for actor in self.registry.registered.values() if actor.state == ALIVE)


async def _stored(task: WriteTask | None) -> None:
    """Wait for a write; UnavailableError if it failed."""
    if task is None:
        return
    error = await asyncio.shield(task)
    if error is not None:
        raise UnavailableError(f"actor change not stored: {error}") from error


def _should_load(init: GcsInitData, actor_id: bytes, data: ActorTableData) -> bool:
    """Whether a stored actor can still live (Ray's OnInitializeActorShouldLoad)."""
    if data.state == DEAD and not is_restartable(data):
        return False
    root = bytes(init.actor_task_specs[actor_id].root_detached_actor_id)
    if data.is_detached and (not root or all(byte == NIL_ID_BYTE for byte in root)):
        root = actor_id  # Ray's core worker sets it so; a spec without it means the same
    if not root or all(byte == NIL_ID_BYTE for byte in root):  # owned by a job
        job = init.jobs.get(actor_id[-JOB_ID_BYTES:])
        return job is not None and not job.is_dead
    if root == actor_id:  # a detached actor lives on
        return True
    owner = init.actors.get(root)  # owned by a detached actor: lives with it
    return owner is not None and owner.state != DEAD
