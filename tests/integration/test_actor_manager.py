"""ActorManager over a real in-memory store, with real raylet and core-worker client
pools talking to scripted grpc.aio raylets and workers on loopback
(gcs_ha.testing.actor_fakes), the real function, runtime env and worker managers, and a
recording publisher.

Ports: 17300-17599 (this file).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gcs_ha.errors import AlreadyExistsError, InvalidStateError, NotFoundError
from gcs_ha.managers.actors.lease_intents import ActorLeaseIntents
from gcs_ha.managers.actors.manager import ActorDeps, ActorFilters, ActorManager
from gcs_ha.managers.function_manager import FUN_NAMESPACE, FunctionManager
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.managers.runtime_env_manager import RuntimeEnvManager
from gcs_ha.managers.worker_manager import WorkerManager
from gcs_ha.proto.ray import pubsub_pb2
from gcs_ha.proto.ray.common_pb2 import (
    INTENDED_USER_EXIT,
    SYSTEM_ERROR,
    ActorDiedErrorContext,
    Address,
    JobConfig,
    NodeDeathInfo,
    TaskSpec,
)
from gcs_ha.proto.ray.gcs_pb2 import ActorTableData, GcsNodeInfo, JobTableData, WorkerTableData
from gcs_ha.proto.ray.node_manager_pb2 import RequestWorkerLeaseReply
from gcs_ha.server.clients.core_workers import GrpcCoreWorkerClientPool
from gcs_ha.server.clients.raylets import GrpcRayletClientPool
from gcs_ha.storage.memory import InMemoryStoreClient
from gcs_ha.storage.tables import GcsTableStorage
from gcs_ha.testing.actor_fakes import (
    JOB,
    FakeWorker,
    Nodes,
    RecordingPublisher,
    Views,
    actor_id,
    creation_spec,
    node_id,
    ports,
)
from gcs_ha.testing.fake_raylet import FakeRaylet, canceled, node_info
from gcs_ha.testing.polling import until

_ports = ports(17300)
OWNER_NODE = node_id(9)  # the driver's node (the actors run on nodes 1, 2)
State = ActorTableData
Reason = ActorDiedErrorContext
FailureType = RequestWorkerLeaseReply.SchedulingFailureType


class Env:
    """An actor manager and what it talks to, over one store (a 'term' each start)."""

    def __init__(self, store: InMemoryStoreClient | None = None) -> None:
        self.store = store or InMemoryStoreClient()
        self.tables = GcsTableStorage(self.store)
        self.publisher = RecordingPublisher()
        self.nodes = Nodes()
        self.views = Views()
        self.raylet_pool = GrpcRayletClientPool()
        self.worker_pool = GrpcCoreWorkerClientPool()
        self.functions = FunctionManager(self.tables.internal_kv)
        self.runtime_envs = RuntimeEnvManager(self.tables.internal_kv, restart_pin_s=0)
        self.workers = WorkerManager(self.tables, self.publisher)
        deps = ActorDeps(
            self.tables,
            self.publisher,
            self.nodes,
            self.views,
            self.raylet_pool,
            self.worker_pool,
            self.functions,
            self.runtime_envs,
        )
        options = {"lease_retry_s": 0.02, "create_retry_s": 0.02, "rng": random.Random(3)}
        self.actors = ActorManager(deps, scheduler_options=options, owner_retry_s=0.05)
        self.workers.add_worker_dead_listener(self.actors.on_worker_dead)
        self.raylets: list[FakeRaylet] = []
        self.owner: FakeWorker | None = None

    @property
    def managers(self) -> list[Any]:
        return [
            self.raylet_pool,
            self.worker_pool,
            self.functions,
            self.runtime_envs,
            self.workers,
            self.actors,
        ]

    async def start(self) -> Env:
        init = await GcsInitData.load(self.tables)
        for manager in self.managers:
            await manager.start(init)
        return self

    async def stop(self) -> None:
        for manager in reversed(self.managers):
            await manager.stop()

    async def shutdown(self) -> None:
        await self.stop()
        for raylet in self.raylets:
            await raylet.stop()
        if self.owner is not None:
            await self.owner.stop()

    async def raylet(self, n: int) -> FakeRaylet:
        raylet = await FakeRaylet(node_info(node_id(n)), ports=_ports).start()
        self.raylets.append(raylet)
        self.nodes.alive[raylet.node_id] = raylet.node
        return raylet

    async def start_owner(self) -> None:
        """A real CoreWorkerService for the driver that owns the actors (on node 9)."""
        self.owner = await FakeWorker(OWNER_NODE, _ports, worker_id=b"o" * 28).start()

    def spec(self, n: int, **kwargs: Any) -> TaskSpec:
        """A creation task owned by the test's driver."""
        assert self.owner is not None
        return creation_spec(n, owner=self.owner.address, **kwargs)

    async def add_job(self, job: bytes = JOB) -> None:
        await self.tables.job_table.put(job, JobTableData(job_id=job, config=JobConfig()))

    async def create(self, n: int, **kwargs: Any) -> Any:
        spec = self.spec(n, **kwargs)
        assert await self.actors.register_actor(spec)
        return await self.actors.create_actor(spec)

    async def state(self, n: int) -> int | None:
        stored = await self.tables.actor_table.get(actor_id(n))
        return None if stored is None else stored.state

    async def stored_state(self, n: int, state: int) -> None:
        """Wait until the actor table holds the actor in `state` (writes follow memory)."""
        for _ in range(1000):
            if await self.state(n) == state:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"actor {n} not stored as {State.ActorState.Name(state)}")  # type: ignore[arg-type]

    def info(self, n: int) -> ActorTableData:
        record = self.actors.get_actor_info(actor_id(n))
        assert record is not None
        return record

    async def worker_dies(self, n: int, exit_type: int = SYSTEM_ERROR, **fields: Any) -> None:
        """The actor's raylet reports its worker's death (ReportWorkerFailure)."""
        record = self.info(n)
        failure = WorkerTableData(exit_type=exit_type, exit_detail="killed", **fields)
        failure.worker_address.CopyFrom(record.address)
        await self.workers.report_worker_failure(failure)


def run(body: Callable[[Env], Awaitable[None]], store: InMemoryStoreClient | None = None) -> None:
    async def main() -> None:
        env = Env(store)
        await env.add_job()
        await env.start_owner()
        await env.start()
        try:
            await body(env)
        finally:
            await env.shutdown()

    asyncio.run(main())


def reason(record: ActorTableData) -> int:
    return int(record.death_cause.actor_died_error_context.reason)


# -- registration and creation ------------------------------------------------------------


def test_register_stores_publishes_and_replays_harmlessly() -> None:
    async def body(env: Env) -> None:
        spec = env.spec(1, name="a")
        assert await env.actors.register_actor(spec)
        stored = await env.tables.actor_table.get(actor_id(1))
        assert stored is not None and stored.state == State.DEPENDENCIES_UNREADY
        assert stored.name == "a" and stored.ray_namespace == "ns" and stored.class_name == "Actor1"
        assert await env.tables.actor_task_spec_table.get(actor_id(1)) == spec
        assert env.publisher.actor_states(actor_id(1)) == [State.DEPENDENCIES_UNREADY]
        assert env.functions.is_referenced(JOB)
        assert await env.actors.register_actor(spec)  # a replay
        assert len(env.actors.registry.registered) == 1
        with pytest.raises(AlreadyExistsError, match="already exists in the namespace ns"):
            await env.actors.register_actor(env.spec(2, name="a"))
        assert await env.actors.register_actor(env.spec(3, name="a", namespace="other"))

    run(body)


def test_create_replies_once_alive_and_replays_wait_for_the_same_creation() -> None:
    async def body(env: Env) -> None:
        raylet = await env.raylet(1)
        spec = env.spec(1)
        await env.actors.register_actor(spec)
        first, second = await asyncio.gather(
            env.actors.create_actor(spec), env.actors.create_actor(spec)
        )
        [worker] = raylet.workers.values()
        assert first.address == second.address == worker.address
        assert len(raylet.record.leases) == 1 and len(worker.pushes) == 1
        assert await env.state(1) == State.ALIVE
        record = env.info(1)
        assert record.node_id == raylet.node_id and record.repr_name == "repr-Actor1.__init__"
        assert record.start_time > 0
        assert env.publisher.actor_states(actor_id(1)) == [
            State.DEPENDENCIES_UNREADY,
            State.PENDING_CREATION,
            State.ALIVE,
        ]
        again = await env.actors.create_actor(spec)  # a replay after ALIVE: at once
        assert again.address == worker.address and len(worker.pushes) == 1
        assert await ActorLeaseIntents(env.tables.internal_kv).load() == []
        with pytest.raises(InvalidStateError):
            await env.actors.create_actor(env.spec(9))

    run(body)


def test_constructor_error_is_reported_to_create_actor() -> None:
    async def body(env: Env) -> None:
        raylet = await env.raylet(1)
        original = raylet.grant

        async def grant(request: Any) -> RequestWorkerLeaseReply:
            reply = await original(request)
            raylet.workers[bytes(reply.worker_address.worker_id)].application_error = "boom"
            return reply

        raylet.grant = grant  # type: ignore[method-assign]
        outcome = await env.create(1)
        assert outcome.creation_error == "boom" and outcome.death_cause is None

    run(body)


def test_unschedulable_actor_dies_and_create_actor_is_cancelled() -> None:
    async def body(env: Env) -> None:
        raylet = await env.raylet(1)
        kind = FailureType.SCHEDULING_CANCELLED_RUNTIME_ENV_SETUP_FAILED
        raylet.policies.append(canceled(kind, "pip failed"))
        outcome = await env.create(1, name="x")
        assert outcome.death_cause is not None
        assert "pip failed" in outcome.death_cause.runtime_env_failed_context.error_message
        await env.stored_state(1, State.DEAD)
        assert env.actors.list_named_actors(True, "") == []
        assert await env.tables.actor_task_spec_table.get(actor_id(1)) is None

    run(body)


def test_actor_waits_for_a_node_then_is_scheduled_when_one_registers() -> None:
    async def body(env: Env) -> None:
        spec = env.spec(1)
        await env.actors.register_actor(spec)
        creation = asyncio.ensure_future(env.actors.create_actor(spec))
        await until(lambda: env.actors.registry.pending)
        raylet = await env.raylet(1)
        env.actors.on_node_added(raylet.node)
        outcome = await creation
        assert outcome.address is not None and outcome.address.node_id == raylet.node_id

    run(body)


# -- restarts and deaths --------------------------------------------------------------------


def test_worker_death_restarts_within_max_restarts_then_dead() -> None:
    async def body(env: Env) -> None:
        raylet = await env.raylet(1)
        await env.create(1, max_restarts=1)
        first_worker = env.info(1).address.worker_id
        await env.worker_dies(1)
        await until(lambda: env.info(1).state == State.ALIVE and env.info(1).num_restarts == 1)
        record = env.info(1)
        assert record.address.worker_id != first_worker
        assert [p.worker_id for p in record.previous_incarnations] == [first_worker]
        assert len(raylet.record.leases) == 2
        assert State.RESTARTING in env.publisher.actor_states(actor_id(1))
        stored_spec = await env.tables.actor_task_spec_table.get(actor_id(1))
        assert stored_spec is not None and stored_spec.attempt_number == 1
        await env.worker_dies(1)  # no restart left
        await until(lambda: env.info(1).state == State.DEAD)
        record = env.info(1)
        assert reason(record) == Reason.WORKER_DIED
        assert "SYSTEM_ERROR" in record.death_cause.actor_died_error_context.error_message
        await env.stored_state(1, State.DEAD)

    run(body)


def test_intended_exit_is_not_restarted() -> None:
    async def body(env: Env) -> None:
        await env.raylet(1)
        await env.create(1, max_restarts=5)
        await env.worker_dies(1, exit_type=INTENDED_USER_EXIT)
        await until(lambda: env.info(1).state == State.DEAD)
        assert env.info(1).num_restarts == 0

    run(body)


def test_creation_task_exception_is_the_death_cause() -> None:
    async def body(env: Env) -> None:
        await env.raylet(1)
        await env.create(1)
        record = env.info(1)
        worker = WorkerTableData(exit_type=SYSTEM_ERROR)
        worker.worker_address.CopyFrom(record.address)
        worker.creation_task_exception.formatted_exception_string = "ValueError"
        await env.workers.report_worker_failure(worker)
        await until(lambda: env.info(1).state == State.DEAD)
        cause = env.info(1).death_cause
        assert cause.creation_task_failure_context.formatted_exception_string == "ValueError"

    run(body)


def test_node_death_restarts_actors_elsewhere_or_marks_them_dead() -> None:
    async def body(env: Env) -> None:
        doomed = await env.raylet(1)
        await env.create(1, max_restarts=1)
        await env.create(2, max_restarts=0)
        other = await env.raylet(2)
        del env.nodes.alive[doomed.node_id]
        dead = GcsNodeInfo()
        dead.CopyFrom(doomed.node)
        dead.state = GcsNodeInfo.DEAD
        dead.death_info.reason = NodeDeathInfo.UNEXPECTED_TERMINATION
        dead.death_info.reason_message = "health check failed"
        env.actors.on_node_dead(dead)
        await until(lambda: env.info(1).state == State.ALIVE and env.info(1).num_restarts == 1)
        assert env.info(1).node_id == other.node_id
        await until(lambda: env.info(2).state == State.DEAD)
        context = env.info(2).death_cause.actor_died_error_context
        assert context.reason == Reason.NODE_DIED
        assert context.node_death_info.reason == NodeDeathInfo.UNEXPECTED_TERMINATION
        assert "terminated unexpectedly: health check failed" in context.error_message

    run(body)


def test_kill_without_restart_kills_the_worker_and_frees_the_name() -> None:
    async def body(env: Env) -> None:
        raylet = await env.raylet(1)
        await env.create(1, name="a", max_restarts=3)
        await env.actors.kill_actor_via_gcs(actor_id(1), force_kill=True, no_restart=True)
        assert await env.state(1) == State.DEAD
        assert reason(env.info(1)) == Reason.RAY_KILL
        await until(lambda: raylet.record.kills)
        [kill] = raylet.record.kills
        assert kill.intended_actor_id == actor_id(1) and kill.force_kill
        assert kill.death_cause.actor_died_error_context.reason == Reason.RAY_KILL
        with pytest.raises(NotFoundError):
            env.actors.get_named_actor_info("a", "ns")
        await env.actors.kill_actor_via_gcs(actor_id(1), True, True)  # a replay: OK
        with pytest.raises(NotFoundError, match="Could not find actor"):
            await env.actors.kill_actor_via_gcs(actor_id(7), True, True)
        await env.create(2, name="a")  # the name is free again

    run(body)


def test_kill_with_restart_lets_the_worker_death_restart_the_actor() -> None:
    async def body(env: Env) -> None:
        raylet = await env.raylet(1)
        await env.create(1, max_restarts=1)
        await env.actors.kill_actor_via_gcs(actor_id(1), force_kill=False, no_restart=False)
        await until(lambda: raylet.record.kills)
        assert not raylet.record.kills[0].force_kill
        await env.worker_dies(1)  # what the raylet reports once the worker exits
        await until(lambda: env.info(1).state == State.ALIVE and env.info(1).num_restarts == 1)

    run(body)


def test_owned_actors_die_with_their_owner_detached_ones_survive() -> None:
    async def body(env: Env) -> None:
        raylet = await env.raylet(1)
        assert env.owner is not None
        owner = env.owner.address
        await env.create(1)
        await env.create(2, detached=True, name="d")
        assert env.owner is not None
        await until(lambda: env.owner is not None and env.owner.waiting_for(actor_id(1)))
        assert not env.owner.waiting_for(actor_id(2))  # detached: no owner poll
        driver = WorkerTableData(exit_type=SYSTEM_ERROR, exit_detail="driver crashed")
        driver.worker_address.CopyFrom(owner)
        await env.workers.report_worker_failure(driver)
        assert env.info(1).state == State.DEAD and reason(env.info(1)) == Reason.OWNER_DIED
        assert env.info(2).state == State.ALIVE
        await until(lambda: raylet.record.kills)
        assert [k.intended_actor_id for k in raylet.record.kills] == [actor_id(1)]

    run(body)


def test_owner_dropping_its_references_destroys_the_actor() -> None:
    async def body(env: Env) -> None:
        raylet = await env.raylet(1)
        await env.create(1, name="gone")
        assert env.owner is not None
        await until(lambda: env.owner is not None and env.owner.waiting_for(actor_id(1)))
        env.owner.drop_refs(actor_id(1))
        await until(lambda: env.info(1).state == State.DEAD)
        assert reason(env.info(1)) == Reason.REF_DELETED
        await until(lambda: raylet.record.kills)
        assert not raylet.record.kills[0].force_kill  # graceful, as Ray's destroy on scope

    run(body)


def test_unreachable_owner_confirmed_dead_by_its_raylet_destroys_the_actor() -> None:
    async def body(env: Env) -> None:
        await env.raylet(1)
        owner_raylet = await env.raylet(9)
        await env.create(1)
        assert env.owner is not None
        await until(lambda: env.owner is not None and env.owner.waiting_for(actor_id(1)))
        await env.owner.stop()  # the driver process vanished without a failure report
        await asyncio.sleep(0.3)
        assert env.info(1).state == State.ALIVE  # its raylet does not say it is dead yet
        owner_raylet.dead_workers.add(env.owner.worker_id)
        await until(lambda: env.info(1).state == State.DEAD)
        assert reason(env.info(1)) == Reason.REF_DELETED

    run(body)


def test_out_of_scope_then_lineage_reconstruction() -> None:
    async def body(env: Env) -> None:
        raylet = await env.raylet(1)
        await env.create(1, max_restarts=2)
        await env.actors.report_actor_out_of_scope(actor_id(1), 0)
        record = env.info(1)
        assert record.state == State.DEAD and reason(record) == Reason.OUT_OF_SCOPE
        assert actor_id(1) in env.actors.registry.registered  # restartable: kept
        await env.actors.report_actor_out_of_scope(actor_id(1), 0)  # a replay: harmless
        await env.actors.restart_actor_for_lineage_reconstruction(actor_id(1), 1)
        await until(lambda: env.info(1).state == State.ALIVE)
        assert env.info(1).num_restarts_due_to_lineage_reconstruction == 1
        await env.actors.restart_actor_for_lineage_reconstruction(actor_id(1), 1)  # stale
        await env.actors.report_actor_out_of_scope(actor_id(1), 0)  # stale: ignored
        assert env.info(1).state == State.ALIVE
        assert len(raylet.record.leases) == 2
        with pytest.raises(InvalidStateError, match="permanently dead"):
            await env.actors.restart_actor_for_lineage_reconstruction(actor_id(5), 1)

    run(body)


# -- reads -----------------------------------------------------------------------------------


def test_named_lookups_listing_and_get_all_filters() -> None:
    async def body(env: Env) -> None:
        await env.raylet(1)
        await env.create(1, name="a")
        await env.create(2, name="b", namespace="other")
        await env.create(3)
        await env.actors.kill_actor_via_gcs(actor_id(3), True, True)
        record, spec = env.actors.get_named_actor_info("a", "ns")
        assert record.actor_id == actor_id(1) and isinstance(spec, TaskSpec)
        with pytest.raises(NotFoundError, match="Actor with name 'a' was not found"):
            env.actors.get_named_actor_info("a", "other")
        assert env.actors.list_named_actors(False, "ns") == [("ns", "a")]
        assert sorted(env.actors.list_named_actors(True, "")) == [("ns", "a"), ("other", "b")]
        page = await env.actors.get_all_actor_info(show_dead_jobs=False, limit=None, filters=None)
        assert page.total == 3 and len(page.actors) == 3 and page.num_filtered == 0
        alive = ActorFilters(state=State.ALIVE)
        page = await env.actors.get_all_actor_info(show_dead_jobs=False, limit=None, filters=alive)
        assert {r.actor_id for r in page.actors} == {actor_id(1), actor_id(2)}
        assert page.num_filtered == 1
        page = await env.actors.get_all_actor_info(show_dead_jobs=False, limit=1, filters=None)
        assert len(page.actors) == 1 and page.total == 3
        one = ActorFilters(actor_id=actor_id(2), job_id=JOB)
        page = await env.actors.get_all_actor_info(show_dead_jobs=True, limit=0, filters=one)
        assert [r.actor_id for r in page.actors] == [actor_id(2)]
        assert env.actors.get_actor_info(actor_id(3)) is not None  # dead, cached

    run(body)


def test_detached_actor_in_an_anonymous_namespace_warns_its_job() -> None:
    async def body(env: Env) -> None:
        namespace = "0f1e2d3c-4b5a-4987-8654-3210fedcba98"
        await env.actors.register_actor(env.spec(1, name="d", detached=True, namespace=namespace))
        [error] = env.publisher.on(pubsub_pb2.RAY_ERROR_INFO_CHANNEL)
        assert error.key_id == JOB.hex().encode()
        assert error.error_info_message.type == "detached_actor_anonymous_namespace"

    run(body)


# -- failover ----------------------------------------------------------------------------


def test_new_leader_reloads_actors_and_resumes_creations_in_flight() -> None:
    """The old leader dies with one actor ALIVE, one whose lease is queued at the raylet,
    and one whose worker was leased and stored but not yet pushed to. The new leader
    (a new manager over the same store) cancels the queued lease, pushes to the stored
    worker without leasing, leases the other anew, and keeps the ALIVE actor."""

    async def body(old: Env) -> None:
        raylet = await old.raylet(1)
        await old.create(1, name="survivor", detached=True)
        survivor_worker = old.info(1).address.worker_id
        # actor 2: the lease is held at the raylet when the leader dies
        raylet.policies.append("hold")
        spec2 = old.spec(2)
        await old.actors.register_actor(spec2)
        creating2 = asyncio.ensure_future(old.actors.create_actor(spec2))
        await until(lambda: raylet.held)
        queued_lease = raylet.record.leases[-1].lease_spec.lease_id
        # actor 3: granted and stored, its PushTask held by the worker
        gate = asyncio.Event()
        original = raylet.grant

        async def grant(request: Any) -> RequestWorkerLeaseReply:
            reply = await original(request)
            raylet.workers[bytes(reply.worker_address.worker_id)].push_gate = gate
            return reply

        raylet.grant = grant  # type: ignore[method-assign]
        spec3 = old.spec(3)
        await old.actors.register_actor(spec3)
        creating3 = asyncio.ensure_future(old.actors.create_actor(spec3))
        await until(lambda: any(w.pushes for w in raylet.workers.values() if w.push_gate))
        assert (await old.tables.actor_table.get(actor_id(3))).address.worker_id  # type: ignore[union-attr]
        granted_lease = raylet.record.leases[-1].lease_spec.lease_id
        await old.stop()  # the leader dies: its calls in flight fail over
        with pytest.raises(Exception, match="stepped down"):
            await creating2
        with pytest.raises(Exception, match="stepped down"):
            await creating3
        raylet.grant = original  # type: ignore[method-assign]
        leases_before = len(raylet.record.leases)

        await old.tables.node_table.put(raylet.node_id, raylet.node)  # ALIVE in the table
        new = Env(old.store)
        new.nodes.alive[raylet.node_id] = raylet.node
        await new.start()
        try:
            # actor 2 will ask again for the lease the old leader left queued (a raylet
            # joins or answers a request with the same lease id); actor 3 has its worker,
            # so its lease intent is only cancelled (the raylet ignores it: granted)
            await until(lambda: raylet.record.cancels == [granted_lease])
            assert not raylet.record.releases
            in_use = new.actors.workers_in_use(raylet.node_id)
            assert survivor_worker in in_use and len(in_use) == 2
            await new.raylet_pool.release_unused_actor_workers(raylet.node, in_use)
            gate.set()
            replay2 = await new.actors.create_actor(spec2)
            replay3 = await new.actors.create_actor(spec3)
            assert replay2.address is not None and replay3.address is not None
            assert len(raylet.record.leases) == leases_before + 1  # only actor 2 leased anew
            assert raylet.record.leases[-1].lease_spec.lease_id == queued_lease
            for n in (1, 2, 3):
                assert await new.state(n) == State.ALIVE
            assert new.actors.get_named_actor_info("survivor", "ns")[0].address.worker_id == (
                survivor_worker
            )
            pushed = [p for w in raylet.workers.values() for p in w.pushes]
            by_actor = [p.task_spec.actor_creation_task_spec.actor_id for p in pushed]
            # each constructor ran once: actor 3's, pushed by the old leader, was waited
            # for on its worker (a second push would crash a real worker)
            assert [by_actor.count(actor_id(n)) for n in (1, 2, 3)] == [1, 1, 1]
            assert not any(w.crashed for w in raylet.workers.values())
            assert new.functions.is_referenced(JOB)
        finally:
            await new.stop()

    run(body)


def test_owned_actors_of_a_finished_job_are_not_reloaded() -> None:
    async def body(env: Env) -> None:
        await env.raylet(1)
        await env.create(1)
        await env.create(2, detached=True)
        await env.stop()
        await env.tables.job_table.put(JOB, JobTableData(job_id=JOB, is_dead=True))
        await env.start()
        assert actor_id(1) not in env.actors.registry.registered
        assert actor_id(1) in env.actors.registry.destroyed
        assert actor_id(2) in env.actors.registry.registered
        for _ in range(100):  # the task spec of the dead actor goes in the background
            if await env.tables.actor_task_spec_table.get(actor_id(1)) is None:
                break
            await asyncio.sleep(0.01)
        assert await env.tables.actor_task_spec_table.get(actor_id(1)) is None

    run(body)


def test_fun_keys_stay_while_a_detached_actor_holds_the_job() -> None:
    async def body(env: Env) -> None:
        await env.raylet(1)
        key = b"ActorClass:" + JOB.hex().encode() + b":h"
        await env.tables.internal_kv.put(FUN_NAMESPACE, key, b"x")
        await env.create(1, detached=True)
        assert env.functions.is_referenced(JOB)
        await env.actors.kill_actor_via_gcs(actor_id(1), True, True)
        await until(lambda: not env.functions.is_referenced(JOB))
        for _ in range(100):  # the last holder went: the job's exported code goes
            if not await env.tables.internal_kv.exists(FUN_NAMESPACE, key):
                break
            await asyncio.sleep(0.01)
        assert not await env.tables.internal_kv.exists(FUN_NAMESPACE, key)

    run(body)


def test_new_leader_acts_on_deaths_the_old_one_stored_but_did_not_act_on() -> None:
    """The previous leader stored a worker's death (worker table) and a node's death
    (node table) and died before restarting their actors: the next leader does it."""

    async def body(env: Env) -> None:
        doomed = await env.raylet(1)
        await env.create(1, max_restarts=1)  # its worker dies
        await env.create(2, max_restarts=1)  # its node dies
        other = await env.raylet(2)
        await env.stop()
        worker = WorkerTableData(is_alive=False, exit_type=SYSTEM_ERROR, exit_detail="oom")
        worker.worker_address.CopyFrom(await _address(env, 1))
        await env.tables.worker_table.put(worker.worker_address.worker_id, worker)
        # actor 2 moves to a node that then dies (stored DEAD, no listener ran)
        record = await env.tables.actor_table.get(actor_id(2))
        assert record is not None
        dead_node = GcsNodeInfo(node_id=node_id(7), state=GcsNodeInfo.DEAD)
        dead_node.death_info.reason = NodeDeathInfo.UNEXPECTED_TERMINATION
        record.address.node_id = record.node_id = node_id(7)
        await env.tables.actor_table.put(actor_id(2), record)
        await env.tables.node_table.put(node_id(7), dead_node)
        del env.nodes.alive[doomed.node_id]
        await env.start()
        await until(lambda: env.info(1).state == State.ALIVE and env.info(1).num_restarts == 1)
        await until(lambda: env.info(2).state == State.ALIVE and env.info(2).num_restarts == 1)
        assert env.info(1).node_id == env.info(2).node_id == other.node_id

    run(body)


async def _address(env: Env, n: int) -> Address:
    record = await env.tables.actor_table.get(actor_id(n))
    assert record is not None
    return record.address
