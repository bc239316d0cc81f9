"""The placement group manager and scheduler over a real in-memory store, the real
resource manager and raylet client pool, against real grpc.aio NodeManagerService
servers on loopback that stand in for raylets (gcs_ha.testing.fake_raylet: they
reserve, commit and return bundles against their own resources and report their view
as the syncer would). The manager and scheduler are what is tested.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from gcs_ha.errors import InvalidRequestError, NotFoundError
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.managers.placement_groups.manager import NameTakenError, PlacementGroupManager
from gcs_ha.managers.placement_groups.scheduler import PlacementGroupScheduler
from gcs_ha.managers.resource_manager import ResourceManager
from gcs_ha.proto.ray.common_pb2 import (
    PACK,
    SPREAD,
    STRICT_PACK,
    STRICT_SPREAD,
    JobConfig,
    PlacementGroupSpec,
)
from gcs_ha.proto.ray.gcs_pb2 import (
    GcsNodeInfo,
    JobTableData,
    PlacementGroupStats,
    PlacementGroupTableData,
)
from gcs_ha.server.clients.raylets import GrpcRayletClientPool
from gcs_ha.storage.memory import InMemoryStoreClient
from gcs_ha.storage.tables import GcsTableStorage
from gcs_ha.testing.fake_raylet import FakeRaylet, bundle_key, node_info
from gcs_ha.testing.polling import until

_ports = itertools.count(18000)  # this file: 18000-18399
WAIT_S = 15.0
PENDING, PREPARED, CREATED = (
    PlacementGroupTableData.PENDING,
    PlacementGroupTableData.PREPARED,
    PlacementGroupTableData.CREATED,
)
REMOVED, RESCHEDULING = PlacementGroupTableData.REMOVED, PlacementGroupTableData.RESCHEDULING
JOB = b"\x01\x00\x00\x00"
BundleKey = tuple[bytes, int]


def node_id(n: int) -> bytes:
    return bytes([n]) * 28


def pg_id(n: int, job: bytes = JOB) -> bytes:
    return bytes([n]) * 14 + job


def spec(
    n: int,
    *bundles: dict[str, float],
    strategy: int = PACK,
    name: str = "",
    job: bytes = JOB,
    detached: bool = False,
) -> PlacementGroupSpec:
    group = pg_id(n, job)
    made = PlacementGroupSpec(
        placement_group_id=group,
        name=name,
        strategy=strategy,  # type: ignore[arg-type]
        creator_job_id=job,
        creator_actor_dead=True,  # made by a driver
        is_detached=detached,
    )
    for index, resources in enumerate(bundles):
        bundle = made.bundles.add(unit_resources=resources)
        bundle.bundle_id.placement_group_id = group
        bundle.bundle_id.bundle_index = index
    return made


# -- the environment -------------------------------------------------------------------


@dataclass
class Env:
    store: InMemoryStoreClient
    tables: GcsTableStorage
    resources: ResourceManager
    pool: GrpcRayletClientPool
    scheduler: PlacementGroupScheduler
    manager: PlacementGroupManager
    raylets: dict[int, FakeRaylet] = field(default_factory=dict)
    jobs: dict[bytes, str] = field(default_factory=dict)

    async def add_node(self, n: int, **resources: float) -> FakeRaylet:
        """A raylet that registers now (its registration view is accurate)."""
        node = node_info(node_id(n), next(_ports), resources or None)
        raylet = FakeRaylet(node, report=self.resources.update_from_view)
        await raylet.start()
        self.raylets[n] = raylet
        await self.tables.node_table.put(raylet.node_id, raylet.node)
        self.resources.on_node_added(raylet.node)
        self.manager.on_node_added(raylet.node)
        return raylet

    async def kill_node(self, n: int) -> None:
        raylet = self.raylets.pop(n)
        await raylet.stop()
        dead = GcsNodeInfo()
        dead.CopyFrom(raylet.node)
        dead.state = GcsNodeInfo.DEAD
        await self.tables.node_table.put(raylet.node_id, dead)
        self.resources.on_node_dead(dead)
        self.pool.forget(raylet.node_id)
        await self.manager.on_node_removed(dead)

    def state(self, n: int) -> int:
        record = self.manager.get_placement_group(pg_id(n))
        assert record is not None
        return record.state

    async def stored(self, n: int) -> PlacementGroupTableData:
        record = await self.tables.placement_group_table.get(pg_id(n))
        assert record is not None
        return record


def build(env_store: InMemoryStoreClient, jobs: dict[bytes, str], **scheduler_args: Any) -> Env:
    tables = GcsTableStorage(env_store)
    resources = ResourceManager(None)
    pool = GrpcRayletClientPool()
    args: dict[str, Any] = {"cancel_interval_s": 0.1, "greet_wait_s": 0.2}
    args.update(scheduler_args)
    scheduler = PlacementGroupScheduler(resources, pool, **args)
    manager = PlacementGroupManager(
        tables, scheduler, resources, namespace_of=lambda job: jobs.get(job, ""), tick_s=0.1
    )
    return Env(env_store, tables, resources, pool, scheduler, manager, jobs=jobs)


async def start(env: Env) -> None:
    init = await GcsInitData.load(env.tables)
    await env.pool.start(init)
    await env.resources.start(init)
    await env.manager.start(init)


async def stop(env: Env) -> None:
    await env.manager.stop()
    await env.resources.stop()
    await env.pool.stop()


def scheduling_state(env: Env, n: int) -> int:
    record = env.manager.get_placement_group(pg_id(n))
    assert record is not None
    return record.stats.scheduling_state


def run(body: Callable[[Env], Awaitable[None]], **scheduler_args: Any) -> None:
    async def main() -> None:
        env = build(InMemoryStoreClient(), {JOB: "ns"}, **scheduler_args)
        await start(env)
        try:
            await body(env)
        finally:
            await stop(env)
            for raylet in env.raylets.values():
                await raylet.stop()

    asyncio.run(main())


# -- create, wait, read ----------------------------------------------------------------


def test_create_prepares_commits_and_wait_returns() -> None:
    async def body(env: Env) -> None:
        raylet = await env.add_node(1, CPU=4.0)
        await env.manager.create_placement_group(spec(1, {"CPU": 1.0}, {"CPU": 2.0}, name="pg"))
        assert (await env.stored(1)).state in (PENDING, PREPARED, CREATED)
        await asyncio.wait_for(env.manager.wait_until_ready(pg_id(1)), WAIT_S)
        stored = await env.stored(1)
        assert stored.state == CREATED and stored.ray_namespace == "ns"
        assert [b.node_id for b in stored.bundles] == [raylet.node_id, raylet.node_id]
        assert raylet.calls == [
            "PrepareBundleResources",
            "CommitBundleResources",
        ]  # one call per node for both bundles
        assert raylet.committed() == [(pg_id(1), 0), (pg_id(1), 1)]
        assert raylet.available["CPU"] == 1.0
        assert stored.stats.scheduling_state == stored.stats.FINISHED
        assert env.scheduler.bundles_on_node(raylet.node_id) == {pg_id(1): [0, 1]}
        assert env.manager.placement_groups_on_node(raylet.node_id) == [pg_id(1)]
        assert (
            sorted(bundle_key(b) for b in env.manager.bundles_in_use(raylet.node_id))
            == raylet.committed()
        )

    run(body)


def test_wait_before_create_and_reads() -> None:
    async def body(env: Env) -> None:
        await env.add_node(1, CPU=2.0)
        waiter = asyncio.ensure_future(env.manager.wait_until_ready(pg_id(1)))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        await env.manager.create_placement_group(spec(1, {"CPU": 1.0}, name="a"))
        await env.manager.create_placement_group(spec(2, {"CPU": 1.0}))
        await asyncio.wait_for(waiter, WAIT_S)
        named = env.manager.get_named_placement_group("a", "ns")
        assert named is not None and named.placement_group_id == pg_id(1)
        assert env.manager.get_named_placement_group("a", "other") is None
        assert env.manager.get_placement_group(pg_id(9)) is None
        records, total = env.manager.get_all_placement_groups(None)
        assert total == 2 and {r.placement_group_id for r in records} == {pg_id(1), pg_id(2)}
        assert len(env.manager.get_all_placement_groups(1)[0]) == 1

    run(body)


def test_create_is_idempotent_and_names_are_unique() -> None:
    async def body(env: Env) -> None:
        raylet = await env.add_node(1, CPU=4.0)
        await asyncio.gather(
            *(env.manager.create_placement_group(spec(1, {"CPU": 1.0}, name="x")) for _ in range(3))
        )
        await asyncio.wait_for(env.manager.wait_until_ready(pg_id(1)), WAIT_S)
        await env.manager.create_placement_group(spec(1, {"CPU": 1.0}, name="x"))  # replay
        assert raylet.calls == ["PrepareBundleResources", "CommitBundleResources"]
        with pytest.raises(NameTakenError, match="already exists"):
            await env.manager.create_placement_group(spec(2, {"CPU": 1.0}, name="x"))
        assert env.manager.get_placement_group(pg_id(2)) is None
        with pytest.raises(InvalidRequestError):
            await env.manager.create_placement_group(
                PlacementGroupSpec(placement_group_id=b"short")
            )

    run(body)


# -- strategies end to end -------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "expected_nodes"),
    [(PACK, 1), (STRICT_PACK, 1), (SPREAD, 3), (STRICT_SPREAD, 3)],
)
def test_strategies_place_on_real_raylets(strategy: int, expected_nodes: int) -> None:
    async def body(env: Env) -> None:
        for n in (1, 2, 3):
            await env.add_node(n, CPU=4.0)
        await env.manager.create_placement_group(spec(1, *[{"CPU": 1.0}] * 3, strategy=strategy))
        await asyncio.wait_for(env.manager.wait_until_ready(pg_id(1)), WAIT_S)
        stored = await env.stored(1)
        assert len({b.node_id for b in stored.bundles}) == expected_nodes
        committed = sum(len(r.committed()) for r in env.raylets.values())
        assert committed == 3

    run(body)


def test_infeasible_waits_for_a_new_node() -> None:
    async def body(env: Env) -> None:
        await env.add_node(1)
        await env.add_node(2)
        await env.manager.create_placement_group(
            spec(1, *[{"CPU": 1.0}] * 3, strategy=STRICT_SPREAD)
        )
        await until(
            lambda: scheduling_state(env, 1) == PlacementGroupStats.INFEASIBLE, "infeasible"
        )

        def reported() -> list[bytes]:
            load = env.resources.placement_group_load()
            return [] if load is None else [g.placement_group_id for g in load.placement_group_data]

        await until(lambda: reported() == [pg_id(1)], "pending group reported to the autoscaler")
        await env.add_node(3)
        await asyncio.wait_for(env.manager.wait_until_ready(pg_id(1)), WAIT_S)
        assert all(len(r.committed()) == 1 for r in env.raylets.values())

    run(body)


def test_busy_cluster_retries_until_resources_free_up() -> None:
    async def body(env: Env) -> None:
        await env.add_node(1, CPU=2.0)
        await env.manager.create_placement_group(spec(1, {"CPU": 2.0}))
        await asyncio.wait_for(env.manager.wait_until_ready(pg_id(1)), WAIT_S)
        await env.manager.create_placement_group(spec(2, {"CPU": 2.0}))
        await asyncio.sleep(0.3)
        assert env.state(2) == PENDING  # retried with backoff, not infeasible
        assert scheduling_state(env, 2) == PlacementGroupStats.NO_RESOURCES
        await env.manager.remove_placement_group(pg_id(1))
        await asyncio.wait_for(env.manager.wait_until_ready(pg_id(2)), WAIT_S)
        assert env.raylets[1].committed() == [(pg_id(2), 0)]

    run(body)


# -- rollback and failures -------------------------------------------------------------


def test_a_prepare_failure_rolls_back_the_other_nodes() -> None:
    async def body(env: Env) -> None:
        one, two = await env.add_node(1), await env.add_node(2)
        two.refuse_prepare = True
        await env.manager.create_placement_group(
            spec(1, {"CPU": 1.0}, {"CPU": 1.0}, strategy=STRICT_SPREAD)
        )
        await until(lambda: "RemovePlacementGroupBundles" in one.calls, "rollback on node 1")
        assert one.bundles == {} and one.available == one.total
        assert env.state(1) == PENDING and (await env.stored(1)).state == PENDING
        two.refuse_prepare = False
        await asyncio.wait_for(env.manager.wait_until_ready(pg_id(1)), WAIT_S)
        assert one.committed() == [(pg_id(1), 0)] or one.committed() == [(pg_id(1), 1)]
        assert len(two.committed()) == 1

    run(body)


def test_a_commit_failure_reschedules_the_lost_bundles() -> None:
    async def body(env: Env) -> None:
        one, two = await env.add_node(1), await env.add_node(2)
        two.fail_commit = True
        await env.manager.create_placement_group(
            spec(1, {"CPU": 1.0}, {"CPU": 1.0}, strategy=SPREAD)
        )
        await until(lambda: env.state(1) == RESCHEDULING, "rescheduling")
        await until(lambda: "RemovePlacementGroupBundles" in two.calls, "prepared bundle cancelled")
        assert two.bundles == {}
        two.fail_commit = False
        await asyncio.wait_for(env.manager.wait_until_ready(pg_id(1)), WAIT_S)
        assert len(one.committed()) + len(two.committed()) == 2

    run(body)


# -- removal ---------------------------------------------------------------------------


def test_remove_returns_the_resources() -> None:
    async def body(env: Env) -> None:
        one, two = await env.add_node(1), await env.add_node(2)
        await env.manager.create_placement_group(
            spec(1, {"CPU": 1.0}, {"CPU": 1.0}, strategy=STRICT_SPREAD, name="r")
        )
        await asyncio.wait_for(env.manager.wait_until_ready(pg_id(1)), WAIT_S)
        await env.manager.remove_placement_group(pg_id(1))
        assert (await env.stored(1)).state == REMOVED
        await until(
            lambda: (
                "RemovePlacementGroupBundles" in one.calls
                and "RemovePlacementGroupBundles" in two.calls
            ),
            "bundles removed",
        )
        assert one.available == one.total and two.available == two.total
        assert env.manager.get_named_placement_group("r", "ns") is None
        with pytest.raises(NotFoundError, match="removed"):
            await env.manager.wait_until_ready(pg_id(1))
        await env.manager.remove_placement_group(pg_id(1))  # replay
        await env.manager.remove_placement_group(pg_id(7))  # unknown
        await env.manager.create_placement_group(spec(1, {"CPU": 1.0}, name="r"))  # late replay
        assert env.state(1) == REMOVED
        await env.manager.create_placement_group(spec(2, {"CPU": 1.0}, name="r"))  # name free
        await asyncio.wait_for(env.manager.wait_until_ready(pg_id(2)), WAIT_S)
        assert env.manager.get_all_placement_groups(None)[1] == 2

    run(body)


def test_remove_while_preparing_cancels_everything() -> None:
    async def body(env: Env) -> None:
        one = await env.add_node(1)
        one.hold_prepare = asyncio.Event()
        await env.manager.create_placement_group(spec(1, {"CPU": 1.0}))
        waiter = asyncio.ensure_future(env.manager.wait_until_ready(pg_id(1)))
        await until(lambda: "PrepareBundleResources" in one.calls, "prepare sent")
        await env.manager.remove_placement_group(pg_id(1))
        with pytest.raises(NotFoundError, match="before it is created"):
            await asyncio.wait_for(waiter, WAIT_S)
        one.hold_prepare.set()
        await until(
            lambda: one.calls.count("RemovePlacementGroupBundles") >= 2 and not one.bundles,
            "cancelled",
        )
        assert "CommitBundleResources" not in one.calls and env.state(1) == REMOVED
        assert env.scheduler.bundles_in_use(one.node_id) == []

    run(body)


def test_job_end_removes_its_groups_but_not_detached_ones() -> None:
    async def body(env: Env) -> None:
        one = await env.add_node(1)
        await env.manager.create_placement_group(spec(1, {"CPU": 1.0}))
        await env.manager.create_placement_group(spec(2, {"CPU": 1.0}, detached=True))
        for n in (1, 2):
            await asyncio.wait_for(env.manager.wait_until_ready(pg_id(n)), WAIT_S)
        env.manager.on_job_finished(JobTableData(job_id=JOB, is_dead=True))
        await until(lambda: env.state(1) == REMOVED, "job's group removed")
        assert env.state(2) == CREATED
        await until(lambda: one.committed() == [(pg_id(2), 0)], "bundle returned")

    run(body)


# -- node death ------------------------------------------------------------------------


def test_node_death_reschedules_elsewhere() -> None:
    async def body(env: Env) -> None:
        await env.add_node(1, CPU=8.0)
        await env.manager.create_placement_group(spec(1, {"CPU": 2.0}, {"CPU": 2.0}))
        await asyncio.wait_for(env.manager.wait_until_ready(pg_id(1)), WAIT_S)
        assert len(env.raylets[1].committed()) == 2
        two = await env.add_node(2, CPU=4.0)
        await env.kill_node(1)
        assert env.state(1) in (RESCHEDULING, PREPARED, CREATED)
        await until(lambda: env.state(1) == CREATED, "placed again")
        await asyncio.wait_for(env.manager.wait_until_ready(pg_id(1)), WAIT_S)
        assert two.committed() == [(pg_id(1), 0), (pg_id(1), 1)]
        assert {b.node_id for b in (await env.stored(1)).bundles} == {two.node_id}
        assert env.scheduler.bundles_on_node(node_id(1)) == {}

    run(body)


def test_node_death_keeps_the_live_bundles_of_a_spread_group() -> None:
    async def body(env: Env) -> None:
        one, two = await env.add_node(1), await env.add_node(2)
        await env.manager.create_placement_group(
            spec(1, {"CPU": 1.0}, {"CPU": 1.0}, strategy=STRICT_SPREAD)
        )
        await asyncio.wait_for(env.manager.wait_until_ready(pg_id(1)), WAIT_S)
        lost = [
            b.bundle_id.bundle_index
            for b in (await env.stored(1)).bundles
            if b.node_id == two.node_id
        ]
        await env.kill_node(2)
        assert (await env.stored(1)).state == RESCHEDULING
        three = await env.add_node(3)
        await until(lambda: env.state(1) == CREATED, "rescheduled")
        assert three.committed() == [(pg_id(1), lost[0])]
        assert (
            len(one.committed()) == 1 and one.calls.count("PrepareBundleResources") == 1
        )  # untouched

    run(body)


# -- failover: a new manager over the same table ---------------------------------------


def failover(body: Callable[[Env, Env], Awaitable[None]]) -> None:
    """`old` leads first; the test stops it and starts `new` over the same store and
    the same raylets (a leader change)."""

    async def main() -> None:
        store = InMemoryStoreClient()
        old = build(store, {JOB: "ns"})
        new = build(store, {JOB: "ns"})
        await start(old)
        try:
            await body(old, new)
        finally:
            await stop(old)
            await stop(new)
            for raylet in {**old.raylets, **new.raylets}.values():
                await raylet.stop()

    asyncio.run(main())


async def alive_job(env: Env) -> None:
    await env.tables.job_table.put(JOB, JobTableData(job_id=JOB, config=JobConfig()))


async def take_over(old: Env, new: Env, *, greet: bool = True) -> None:
    """Stop `old`, start `new`; `greet` sends ReleaseUnusedBundles as the node manager
    does once serving began (else the scheduler must send it itself)."""
    await stop(old)
    new.raylets = old.raylets
    await alive_job(new)
    await start(new)
    for raylet in new.raylets.values():
        raylet.report_to = new.resources.update_from_view
        raylet.report()
        if greet:
            in_use = new.manager.bundles_in_use(raylet.node_id)
            await new.pool.release_unused_bundles(raylet.node, in_use)


def test_failover_commits_a_prepared_group_exactly_once() -> None:
    async def body(old: Env, new: Env) -> None:
        one = await old.add_node(1)
        one.hold_commit = asyncio.Event()
        await old.manager.create_placement_group(spec(1, {"CPU": 1.0}, {"CPU": 1.0}))
        await until(lambda: "CommitBundleResources" in one.calls, "commit sent")
        assert (await old.stored(1)).state == PREPARED
        one.hold_commit = None
        await take_over(old, new)  # the old leader never saw the commit's reply
        await asyncio.wait_for(new.manager.wait_until_ready(pg_id(1)), WAIT_S)
        await until(lambda: bool(one.released_with), "released")
        assert one.released_with[0] == [(pg_id(1), 0), (pg_id(1), 1)]  # kept
        assert one.calls.count("PrepareBundleResources") == 1 and one.committed() == [
            (pg_id(1), 0),
            (pg_id(1), 1),
        ]
        assert one.available["CPU"] == 2.0

    failover(body)


@pytest.mark.parametrize("greet", [True, False])
def test_failover_releases_an_unrecorded_prepare_then_places_once(greet: bool) -> None:
    async def body(old: Env, new: Env) -> None:
        one = await old.add_node(1, CPU=2.0)
        one.hold_prepare = asyncio.Event()
        await old.manager.create_placement_group(spec(1, {"CPU": 2.0}))
        await until(lambda: "PrepareBundleResources" in one.calls, "prepare sent")
        assert one.available["CPU"] == 0.0  # reserved, but the table says PENDING
        one.hold_prepare = None
        await take_over(old, new, greet=greet)
        await asyncio.wait_for(new.manager.wait_until_ready(pg_id(1)), WAIT_S)
        assert one.calls.count("ReleaseUnusedBundles") == 1
        first_release = one.calls.index("ReleaseUnusedBundles")
        assert (
            "PrepareBundleResources" in one.calls[first_release:]
        )  # placed again after the release
        assert one.released_with[0] == []
        assert one.committed() == [(pg_id(1), 0)] and one.available["CPU"] == 0.0

    failover(body)


def test_failover_keeps_created_groups_and_removes_the_dead_jobs() -> None:
    async def body(old: Env, new: Env) -> None:
        one = await old.add_node(1)
        await old.manager.create_placement_group(spec(1, {"CPU": 1.0}, name="keep"))
        await old.manager.create_placement_group(spec(2, {"CPU": 1.0}, job=b"\x02\x00\x00\x00"))
        for n in (1, 2):
            await asyncio.wait_for(
                old.manager.wait_until_ready(pg_id(n, b"\x02\x00\x00\x00" if n == 2 else JOB)),
                WAIT_S,
            )
        await take_over(old, new)  # job 2 is not in the job table: dead
        await until(lambda: one.committed() == [(pg_id(1), 0)], "dead job's bundle returned")
        kept = new.manager.get_named_placement_group("keep", "ns")
        assert kept is not None and kept.state == CREATED
        await new.manager.wait_until_ready(pg_id(1))
        await until(lambda: bool(one.released_with), "released")
        assert (pg_id(1), 0) in one.released_with[0]
        assert one.calls.count("PrepareBundleResources") == 2  # nothing placed again

    failover(body)


def test_failover_reschedules_bundles_of_nodes_that_died_meanwhile() -> None:
    async def body(old: Env, new: Env) -> None:
        one = await old.add_node(1)
        await old.manager.create_placement_group(spec(1, {"CPU": 1.0}))
        await asyncio.wait_for(old.manager.wait_until_ready(pg_id(1)), WAIT_S)
        await stop(old)
        await one.stop()
        dead = GcsNodeInfo()
        dead.CopyFrom(one.node)
        dead.state = GcsNodeInfo.DEAD
        await new.tables.node_table.put(one.node_id, dead)  # died with no leader to see it
        await alive_job(new)
        await start(new)
        assert new.state(1) == RESCHEDULING
        two = await new.add_node(2)
        await asyncio.wait_for(new.manager.wait_until_ready(pg_id(1)), WAIT_S)
        assert two.committed() == [(pg_id(1), 0)]
        assert (await new.stored(1)).bundles[0].node_id == two.node_id

    failover(body)
