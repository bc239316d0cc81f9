"""ActorScheduler against real grpc.aio raylets and core workers on loopback.

The raylets and workers (tests/actor_fakes.py) stand in for Ray's processes and are
scripted per test; the scheduler, with the real raylet and core-worker client pools, a
real store for the lease intents and the actor records, is what is tested.

Ports: 17000-17299 (this file).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from gcs_ha.managers.actors.gcs_actor import DEAD, PENDING_CREATION, GcsActor
from gcs_ha.managers.actors.lease_intents import ActorLeaseIntents
from gcs_ha.managers.actors.node_selection import select_forwarding_node
from gcs_ha.managers.actors.scheduler import (
    NIL_ACTOR_ID,
    NO_NODES_MESSAGE,
    ActorScheduler,
    SchedulerHandlers,
)
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.proto.ray.common_pb2 import (
    LABEL_OPERATOR_IN,
    Address,
    LabelSelectorConstraint,
)
from gcs_ha.proto.ray.core_worker_pb2 import PushTaskReply
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo
from gcs_ha.proto.ray.node_manager_pb2 import RequestWorkerLeaseReply
from gcs_ha.server.clients.core_workers import GrpcCoreWorkerClientPool
from gcs_ha.server.clients.raylets import GrpcRayletClientPool
from gcs_ha.storage.memory import InMemoryStoreClient
from gcs_ha.storage.tables import GcsTableStorage
from gcs_ha.testing.actor_fakes import (
    Nodes,
    Views,
    actor_id,
    creation_spec,
    node_id,
    ports,
)
from gcs_ha.testing.fake_raylet import FakeRaylet, canceled, node_info, rejected, spillback
from gcs_ha.testing.polling import until

_ports = ports(17000)
FailureType = RequestWorkerLeaseReply.SchedulingFailureType


class Env:
    """A scheduler with real pools, a real store, scripted raylets."""

    def __init__(self) -> None:
        self.tables = GcsTableStorage(InMemoryStoreClient())
        self.intents = ActorLeaseIntents(self.tables.internal_kv)
        self.nodes = Nodes()
        self.views = Views()
        self.raylets_pool = GrpcRayletClientPool()
        self.workers_pool = GrpcCoreWorkerClientPool()
        self.created: list[tuple[GcsActor, PushTaskReply]] = []
        self.failed: list[tuple[bytes, int, str]] = []
        self.raylets: list[FakeRaylet] = []
        self.scheduler = ActorScheduler(
            self.nodes,
            self.views,
            self.raylets_pool,
            self.workers_pool,
            intents=self.intents,
            handlers=SchedulerHandlers(self.persist, self.on_created, self.on_failed),
            lease_retry_s=0.02,
            create_retry_s=0.02,
            release_wait_s=5.0,
            rng=random.Random(7),
        )

    async def persist(self, actor: GcsActor) -> None:
        await self.tables.actor_table.put(actor.actor_id, actor.snapshot())

    def on_created(self, actor: GcsActor, reply: PushTaskReply) -> None:
        self.created.append((actor, reply))

    def on_failed(self, actor: GcsActor, failure_type: int, message: str) -> None:
        self.failed.append((actor.actor_id, failure_type, message))

    async def raylet(self, n: int, alive: bool = True) -> FakeRaylet:
        raylet = await FakeRaylet(node_info(node_id(n)), ports=_ports).start()
        self.raylets.append(raylet)
        if alive:
            self.nodes.alive[raylet.node_id] = raylet.node
        return raylet

    async def start(self, init: GcsInitData | None = None) -> Env:
        init = init or GcsInitData()
        await self.raylets_pool.start(init)
        await self.workers_pool.start(init)
        await self.scheduler.start(init)
        return self

    async def stop(self) -> None:
        await self.scheduler.stop()
        await self.workers_pool.stop()
        await self.raylets_pool.stop()
        for raylet in self.raylets:
            await raylet.stop()

    def created_ids(self) -> list[bytes]:
        return [actor.actor_id for actor, _ in self.created]


def run(body: Callable[[Env], Awaitable[None]]) -> None:
    async def main() -> None:
        env = await Env().start()
        try:
            await body(env)
        finally:
            await env.stop()

    asyncio.run(main())


def actor(n: int, **kwargs: Any) -> GcsActor:
    return GcsActor.from_task_spec(creation_spec(n, **kwargs))


# -- the happy path ---------------------------------------------------------------------


def test_lease_granted_then_push_task_creates_the_actor() -> None:
    async def body(env: Env) -> None:
        raylet = await env.raylet(1)
        a = actor(1, resources={"CPU": 1.0})
        env.scheduler.schedule(a)
        await until(lambda: env.created)
        created, reply = env.created[0]
        assert created is a and reply.actor_repr_name == "repr-Actor1.__init__"
        # the lease spec comes from the creation task
        [request] = raylet.record.leases
        spec = request.lease_spec
        assert len(spec.lease_id) == 32 and spec.actor_id == actor_id(1)
        assert spec.job_id == a.spec.job_id and spec.type == a.spec.type
        assert dict(spec.required_resources) == {"CPU": 1.0}
        assert dict(spec.required_placement_resources) == {"CPU": 1.0}
        assert not request.grant_or_reject and request.backlog_size == 0
        # the creation task went to the leased worker with the lease's resources
        [worker] = raylet.workers.values()
        [push] = worker.pushes
        assert push.intended_worker_id == worker.worker_id
        assert push.task_spec.actor_creation_task_spec.actor_id == actor_id(1)
        assert push.task_spec.lease_grant_timestamp_ms > 0
        assert [m.name for m in push.resource_mapping] == ["CPU"]
        # the record was stored with the worker before the push
        stored = await env.tables.actor_table.get(actor_id(1))
        assert stored is not None and stored.address.worker_id == worker.worker_id
        assert stored.pid == 1000 + worker.port
        # the intent of the lease was written first
        [intent] = await env.intents.load()
        assert intent.node_id == raylet.node_id and intent.lease_id == spec.lease_id
        assert env.scheduler.num_leasing() == env.scheduler.num_creating() == 0

    run(body)


def test_spillback_leases_at_the_target_in_grant_or_reject_mode() -> None:
    async def body(env: Env) -> None:
        first = await env.raylet(1)
        second = await env.raylet(2)
        first.policies.append(spillback(second))
        # the owner's node is the first raylet: an actor with resources goes there first
        env.scheduler.schedule(actor(1, resources={"CPU": 1.0}))
        await until(lambda: env.created)
        assert len(first.record.leases) == 1 and len(second.record.leases) == 1
        assert second.record.leases[0].grant_or_reject
        created, _ = env.created[0]
        assert created.node_id == second.node_id
        assert created.worker_id in second.workers

    run(body)


def test_spillback_to_a_dead_node_chooses_again() -> None:
    async def body(env: Env) -> None:
        first = await env.raylet(1)
        gone = await env.raylet(2, alive=False)
        first.policies.append(spillback(gone))
        env.scheduler.schedule(actor(1, resources={"CPU": 1.0}))
        await until(lambda: env.created)
        assert len(first.record.leases) == 2 and not gone.record.leases

    run(body)


def test_rejection_reschedules() -> None:
    async def body(env: Env) -> None:
        raylet = await env.raylet(1)
        raylet.policies += [rejected(), rejected()]
        env.scheduler.schedule(actor(1))
        await until(lambda: env.created)
        assert len(raylet.record.leases) == 3
        assert len({request.lease_spec.lease_id for request in raylet.record.leases}) == 3

    run(body)


def test_rpc_errors_are_retried_and_the_failed_leases_cancelled() -> None:
    async def body(env: Env) -> None:
        raylet = await env.raylet(1)
        raylet.policies += ["fail", "fail"]
        env.scheduler.schedule(actor(1))
        await until(lambda: env.created)
        leases = [request.lease_spec.lease_id for request in raylet.record.leases]
        assert len(leases) == 3
        await until(lambda: len(raylet.record.cancels) == 2)
        assert sorted(raylet.record.cancels) == sorted(leases[:2])

    run(body)


def test_push_task_failures_are_retried_on_the_same_worker() -> None:
    async def body(env: Env) -> None:
        raylet = await env.raylet(1)
        original = raylet.grant

        async def grant(request: Any) -> RequestWorkerLeaseReply:
            reply = await original(request)
            raylet.workers[bytes(reply.worker_address.worker_id)].push_failures = 2
            return reply

        raylet.grant = grant  # type: ignore[method-assign]
        env.scheduler.schedule(actor(1))
        await until(lambda: env.created)
        [worker] = raylet.workers.values()
        assert len(worker.pushes) == 3 and len(raylet.record.leases) == 1

    run(body)


# -- failures ---------------------------------------------------------------------------


def test_no_alive_node_fails_with_scheduling_failed() -> None:
    async def body(env: Env) -> None:
        env.scheduler.schedule(actor(1))
        assert env.failed == [(actor_id(1), FailureType.SCHEDULING_FAILED, NO_NODES_MESSAGE)]

    run(body)


def test_a_lease_cancelled_by_the_raylet_goes_to_the_failure_handler() -> None:
    async def body(env: Env) -> None:
        raylet = await env.raylet(1)
        raylet.policies.append(
            canceled(FailureType.SCHEDULING_CANCELLED_RUNTIME_ENV_SETUP_FAILED, "pip failed")
        )
        env.scheduler.schedule(actor(1))
        await until(lambda: env.failed)
        kind = FailureType.SCHEDULING_CANCELLED_RUNTIME_ENV_SETUP_FAILED
        assert env.failed == [(actor_id(1), kind, "pip failed")]
        assert env.scheduler.num_leasing() == 0 and not env.created

    run(body)


# -- cancellation -------------------------------------------------------------------------


def test_node_death_while_leasing_cancels_and_kills_a_late_grant() -> None:
    async def body(env: Env) -> None:
        raylet = await env.raylet(1)
        raylet.policies.append("hold")
        env.scheduler.schedule(actor(1))
        await until(lambda: raylet.held)
        assert env.scheduler.cancel_on_node(raylet.node_id) == [actor_id(1)]
        raylet.release_held()  # the raylet grants anyway: its worker must not leak
        await until(lambda: raylet.record.kills)
        [kill] = raylet.record.kills
        [worker] = raylet.workers.values()
        assert kill.worker_id == worker.worker_id and kill.intended_actor_id == NIL_ACTOR_ID
        assert kill.force_kill and not worker.pushes and not env.created

    run(body)


def test_cancel_on_leasing_sends_cancel_worker_lease() -> None:
    async def body(env: Env) -> None:
        raylet = await env.raylet(1)
        raylet.policies.append("hold")
        a = actor(1)
        env.scheduler.schedule(a)
        await until(lambda: raylet.held)
        assert env.scheduler.cancel_on_leasing(raylet.node_id, a.actor_id)
        await until(lambda: raylet.record.cancels)
        assert raylet.record.cancels == [raylet.record.leases[0].lease_spec.lease_id]
        assert not env.scheduler.is_scheduling(a.actor_id)

    run(body)


def test_worker_death_while_creating_stops_the_push_and_kills_the_worker() -> None:
    async def body(env: Env) -> None:
        raylet = await env.raylet(1)
        gate = asyncio.Event()
        original = raylet.grant

        async def grant(request: Any) -> RequestWorkerLeaseReply:
            reply = await original(request)
            raylet.workers[bytes(reply.worker_address.worker_id)].push_gate = gate
            return reply

        raylet.grant = grant  # type: ignore[method-assign]
        a = actor(1)
        env.scheduler.schedule(a)
        await until(lambda: env.scheduler.num_creating() == 1)
        [worker] = raylet.workers.values()
        await until(lambda: worker.pushes)
        assert env.scheduler.cancel_on_worker(raylet.node_id, worker.worker_id) == a.actor_id
        gate.set()  # the constructor finishes after all: the creation is not reported
        await until(lambda: raylet.record.kills)
        assert raylet.record.kills[0].intended_actor_id == a.actor_id and not env.created

    run(body)


# -- failover -----------------------------------------------------------------------------


def test_start_cancels_the_leases_a_previous_leader_left() -> None:
    async def body(env: Env) -> None:
        raylet = await env.raylet(1)
        gone = node_id(9)
        await env.intents.record(actor_id(1), raylet.node_id, b"L" * 32)
        await env.intents.record(actor_id(2), gone, b"M" * 32)
        await env.scheduler.stop()
        await env.scheduler.start(GcsInitData(nodes={raylet.node_id: raylet.node}))
        assert raylet.record.cancels == [b"L" * 32]
        assert await env.intents.load() == []

    run(body)


def test_an_actor_still_waiting_asks_again_for_the_lease_a_previous_leader_left() -> None:
    """Same lease id at the same raylet: Ray's raylet answers a lease it already granted
    with that worker (or joins the request it still queues), so a lease granted just as
    leadership moved is used, not leaked. The other intents are cancelled: a dead actor's
    at once, one nobody asks for again once the actor manager says so."""

    async def body(env: Env) -> None:
        one, two = await env.raylet(1), await env.raylet(2)
        waiting, dead, unloaded = actor(1), actor(2), actor(3)
        old = {a.actor_id: bytes([65 + n]) * 32 for n, a in enumerate((waiting, dead, unloaded))}
        records = {}
        for a, state in ((waiting, PENDING_CREATION), (dead, DEAD), (unloaded, PENDING_CREATION)):
            await env.intents.record(a.actor_id, one.node_id, old[a.actor_id])
            records[a.actor_id] = a.snapshot()
            records[a.actor_id].state = state  # type: ignore[assignment]
        await env.scheduler.stop()
        nodes = {one.node_id: one.node, two.node_id: two.node}
        await env.scheduler.start(GcsInitData(nodes=nodes, actors=records))
        assert one.record.cancels == [old[dead.actor_id]]
        for raylet in (one, two):
            await env.raylets_pool.release_unused_actor_workers(raylet.node, [])
        env.scheduler.schedule(waiting)
        await until(lambda: env.created)
        [request] = one.record.leases
        assert request.lease_spec.lease_id == old[waiting.actor_id] and not two.record.leases
        env.scheduler.drop_unadopted()  # the actor manager, once actors were resumed
        await until(lambda: old[unloaded.actor_id] in one.record.cancels)

        async def intents_left() -> set[bytes]:
            return {i.actor_id for i in await env.intents.load()}

        for _ in range(100):
            if unloaded.actor_id not in await intents_left():
                break
            await asyncio.sleep(0.02)
        assert await intents_left() <= {waiting.actor_id}

    run(body)


def test_leases_to_a_node_alive_at_start_wait_for_its_worker_release() -> None:
    async def body(env: Env) -> None:
        raylet = await env.raylet(1)
        await env.scheduler.stop()
        await env.scheduler.start(GcsInitData(nodes={raylet.node_id: raylet.node}))
        env.scheduler.schedule(actor(1))
        await asyncio.sleep(0.2)
        assert not raylet.record.leases  # held until ReleaseUnusedActorWorkers answered
        await env.raylets_pool.release_unused_actor_workers(raylet.node, [])
        await until(lambda: env.created)
        assert raylet.record.releases == [[]] and len(raylet.record.leases) == 1

    run(body)


def test_reschedule_of_an_actor_with_a_leased_worker_pushes_without_leasing() -> None:
    async def body(env: Env) -> None:
        raylet = await env.raylet(1)
        grant = await raylet.grant(None)  # type: ignore[arg-type]
        a = actor(1)
        a.set_address(grant.worker_address)
        a.data.resource_mapping.extend(grant.resource_mapping)
        env.scheduler.reschedule(a)
        await until(lambda: env.created)
        assert not raylet.record.leases
        [worker] = raylet.workers.values()
        assert len(worker.pushes) == 1 and worker.pushes[0].resource_mapping[0].name == "CPU"

    run(body)


# -- node choice --------------------------------------------------------------------------


def _alive(*ns: int) -> dict[bytes, GcsNodeInfo]:
    return {node_id(n): GcsNodeInfo(node_id=node_id(n)) for n in ns}


def test_node_choice_follows_affinity_then_owner_then_room() -> None:
    views = Views()
    rng = random.Random(1)
    owner = Address(node_id=node_id(1), worker_id=b"o" * 28)
    pinned = actor(1, owner=owner)
    constraint = LabelSelectorConstraint(
        label_key="ray.io/node-id", operator=LABEL_OPERATOR_IN, label_values=[node_id(3).hex()]
    )
    pinned.spec.label_selector.label_constraints.append(constraint)
    assert select_forwarding_node(pinned, _alive(1, 2, 3), views.views, rng) == node_id(3)

    affine = actor(2, owner=owner)
    affine.spec.scheduling_strategy.node_affinity_scheduling_strategy.node_id = node_id(2)
    assert select_forwarding_node(affine, _alive(1, 2), views.views, rng) == node_id(2)
    assert select_forwarding_node(affine, _alive(1), views.views, rng) == node_id(1)

    # placement demand {CPU: 1}: the owner's node when it has room, else one with room
    plain = actor(3, owner=owner)
    views.set(node_id(1), {"CPU": 1.0})
    views.set(node_id(2), {"CPU": 0.0})
    assert select_forwarding_node(plain, _alive(1, 2), views.views, rng) == node_id(1)
    views.set(node_id(1), {"CPU": 0.0})
    views.set(node_id(2), {"CPU": 2.0})
    assert select_forwarding_node(plain, _alive(1, 2), views.views, rng) == node_id(2)
    # no room anywhere: Ray's rule (the owner's node for an actor that holds resources)
    views.set(node_id(2), {"CPU": 0.0})
    hungry = actor(4, owner=owner, resources={"CPU": 1.0})
    assert select_forwarding_node(hungry, _alive(1, 2), views.views, rng) == node_id(1)
    assert select_forwarding_node(plain, {}, views.views, rng) is None


def test_reschedule_does_not_push_again_to_a_worker_already_hosting_the_actor() -> None:
    async def body(env: Env) -> None:
        raylet = await env.raylet(1)
        grant = await raylet.grant(None)  # type: ignore[arg-type]
        worker = raylet.workers[bytes(grant.worker_address.worker_id)]
        worker.actor_id, worker.running = actor_id(1), 1  # the old leader's push is running
        a = actor(1)
        a.set_address(grant.worker_address)
        env.scheduler.reschedule(a)
        await asyncio.sleep(0.2)
        assert not env.created and not worker.pushes  # waiting for the constructor
        worker.running = 0
        await until(lambda: env.created)
        assert not worker.pushes and not raylet.record.leases

    run(body)
