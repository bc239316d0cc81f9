"""ActorWorkerSweep against real grpc.aio raylets (tests/actor_fakes' FakeRaylet records
every ReleaseUnusedActorWorkers), the real raylet client pool, and a real scheduler for
which nodes have a lease request unanswered.

Ports: 12300-12399 (this file).
"""

from __future__ import annotations

import asyncio
import random

from gcs_ha.managers.actor_lease_intents import ActorLeaseIntents
from gcs_ha.managers.actor_scheduler import GcsActorScheduler, SchedulerHandlers
from gcs_ha.managers.actor_worker_sweep import ActorWorkerSweep
from gcs_ha.managers.gcs_actor import GcsActor
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.proto.ray.core_worker_pb2 import PushTaskReply
from gcs_ha.server.core_worker_clients import GrpcCoreWorkerClientPool
from gcs_ha.server.outbound import GrpcRayletClientPool
from gcs_ha.storage.memory import InMemoryStoreClient
from gcs_ha.storage.tables import GcsTableStorage
from gcs_ha.testing.actor_fakes import FakeRaylet, Nodes, Views, creation_spec, ports, until

_ports = ports(12300)


def test_sweep_spares_held_workers_and_skips_nodes_with_a_lease_in_flight() -> None:
    async def body() -> None:
        nodes = Nodes()
        raylets = GrpcRayletClientPool()
        workers = GrpcCoreWorkerClientPool()
        created: list[tuple[GcsActor, PushTaskReply]] = []
        tables = GcsTableStorage(InMemoryStoreClient())

        async def persist(actor: GcsActor) -> None:
            await tables.actor_table.put(actor.actor_id, actor.snapshot())

        scheduler = GcsActorScheduler(
            nodes, Views(), raylets, workers,
            intents=ActorLeaseIntents(tables.internal_kv),
            handlers=SchedulerHandlers(persist, lambda a, r: created.append((a, r)), print),
            lease_retry_s=0.02, create_retry_s=0.02, rng=random.Random(1),
        )  # fmt: skip

        def in_use(node_id: bytes) -> list[bytes]:
            return [bytes(a.worker_id) for a, _ in created if a.node_id == node_id]

        sweep = ActorWorkerSweep(nodes.alive_nodes, raylets, in_use, scheduler.is_leasing_at)
        one, two = await FakeRaylet(1, _ports).start(), await FakeRaylet(2, _ports).start()
        for raylet in (one, two):
            nodes.alive[raylet.node_id] = raylet.info
        for component in (raylets, workers, scheduler):
            await component.start(GcsInitData())
        try:
            one.policies = ["hold"]  # the lease stays unanswered until release_held
            actor = GcsActor.from_task_spec(creation_spec(1, resources={"CPU": 1.0}))
            nodes.alive.pop(two.node_id)
            scheduler.schedule(actor)
            await until(lambda: one.record.leases)
            nodes.alive[two.node_id] = two.info
            await sweep.sweep()
            assert one.record.releases == []  # its grant may be on the way
            assert two.record.releases == [[]]
            one.release_held()
            await until(lambda: created)
            await sweep.sweep()
            assert one.record.releases == [[bytes(actor.worker_id)]]  # the actor's worker kept
            assert two.record.releases == [[], []]
            periodic = ActorWorkerSweep(
                nodes.alive_nodes, raylets, in_use, scheduler.is_leasing_at, period_s=0.02
            )
            task = asyncio.create_task(periodic.run())
            await until(lambda: len(two.record.releases) >= 4)
            task.cancel()
        finally:
            await scheduler.stop()
            await workers.stop()
            await raylets.stop()
            await one.stop()
            await two.stop()

    asyncio.run(body())
