"""NodeManager over a real in-memory store, with real grpc.aio raylet stand-ins.

The raylets (gcs_ha.testing.fake_raylet: NodeManagerService + grpc health on loopback)
and the recording publisher stand in for Ray's processes and the pubsub manager; the
node manager (with the real health-check manager and raylet client pool) is what is
tested.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gcs_ha.errors import InvalidRequestError, UnavailableError, UnknownOutcomeError
from gcs_ha.managers.health_check_manager import HealthCheckManager
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.managers.node_manager import NodeManager
from gcs_ha.managers.node_states import HEALTH_DEATH_MESSAGE
from gcs_ha.proto.ray import pubsub_pb2
from gcs_ha.proto.ray.autoscaler_pb2 import DRAIN_NODE_REASON_PREEMPTION, DrainNodeRequest
from gcs_ha.proto.ray.common_pb2 import NodeDeathInfo
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo, NodeSnapshot
from gcs_ha.proto.ray.gcs_service_pb2 import GetAllNodeInfoRequest
from gcs_ha.proto.ray.ray_syncer_pb2 import ResourceViewSyncMessage
from gcs_ha.server.clients.raylets import GrpcRayletClientPool
from gcs_ha.storage.memory import InMemoryStoreClient
from gcs_ha.storage.tables import GcsTableStorage
from gcs_ha.testing.fake_raylet import FakeRaylet
from gcs_ha.testing.polling import until

_ports = itertools.count(13100)  # this file: 13100-13199
ALIVE, DEAD = GcsNodeInfo.ALIVE, GcsNodeInfo.DEAD
WAIT_S = 10.0
Selector = GetAllNodeInfoRequest.NodeSelector


def node_id(n: int) -> bytes:
    return bytes([n]) * 28


def node_info(n: int, port: int | None = None, **fields: Any) -> GcsNodeInfo:
    return GcsNodeInfo(
        node_id=node_id(n),
        node_manager_address=fields.pop("address", "127.0.0.1"),
        node_manager_port=port if port is not None else next(_ports),
        node_name=fields.pop("name", f"node-{n}"),
        object_manager_port=9000 + n,
        resources_total={"CPU": 2.0},
        **fields,
    )


# -- stand-ins for Ray's processes -----------------------------------------------------


class RecordingPublisher:
    """A Publisher that keeps what was published."""

    def __init__(self) -> None:
        self.messages: list[pubsub_pb2.PubMessage] = []

    def publish(self, message: pubsub_pb2.PubMessage) -> None:
        self.messages.append(message)

    def on(self, channel: int) -> list[pubsub_pb2.PubMessage]:
        return [m for m in self.messages if m.channel_type == channel]


class FlakyStore(InMemoryStoreClient):
    """The in-memory store, whose writes can be made to fail as after a lost leadership."""

    fail_writes = False

    async def put(self, table: str, key: bytes, value: bytes, overwrite: bool = True) -> bool:
        if self.fail_writes:
            raise UnknownOutcomeError("leadership lost")
        return await super().put(table, key, value, overwrite)


# -- harness ---------------------------------------------------------------------------


class Env:
    """A node manager with its health checker, pool, publisher and tables."""

    def __init__(self, store: InMemoryStoreClient | None = None, **health: float) -> None:
        self.store = store if store is not None else FlakyStore()
        self.tables = GcsTableStorage(self.store)
        self.publisher = RecordingPublisher()
        self.pool = GrpcRayletClientPool()
        params: dict[str, Any] = {"initial_delay_s": 0.02, "period_s": 0.03, "timeout_s": 1.0}
        params.update(health)
        self.health = HealthCheckManager(self.pool, failure_threshold=3, **params)
        self.now_ms = 1_000
        self.nodes = NodeManager(
            self.tables, self.publisher, self.pool, self.health, clock_ms=lambda: self.now_ms
        )

    async def start(self) -> Env:
        init = await GcsInitData.load(self.tables)
        for manager in (self.pool, self.health, self.nodes):
            await manager.start(init)
        return self

    async def stop(self) -> None:
        for manager in (self.nodes, self.health, self.pool):
            await manager.stop()

    async def stored(self, n: int) -> GcsNodeInfo | None:
        return await self.tables.node_table.get(node_id(n))


def run(body: Callable[[Env], Awaitable[None]], **health: float) -> None:
    async def main() -> None:
        env = await Env(None, **health).start()
        try:
            await body(env)
        finally:
            await env.stop()

    asyncio.run(main())


NO_CHECKS = {"initial_delay_s": 3600.0}  # health checks that never start in the test


# -- RegisterNode ----------------------------------------------------------------------


def test_register_stores_publishes_and_is_idempotent() -> None:
    async def body(env: Env) -> None:
        added: list[bytes] = []
        env.nodes.add_node_added_listener(lambda node: added.append(node.node_id))
        info = node_info(1)
        info.state = DEAD  # whatever the raylet says, a registered node is ALIVE
        await env.nodes.register_node(info)
        stored = await env.stored(1)
        assert stored is not None and stored.state == ALIVE
        assert stored.resources_total["CPU"] == 2.0
        assert env.nodes.check_alive([node_id(1), node_id(2)]) == [True, False]
        [published] = env.publisher.on(pubsub_pb2.GCS_NODE_INFO_CHANNEL)
        assert published.key_id == node_id(1)
        assert published.node_info_message == stored
        [live] = env.publisher.on(pubsub_pb2.GCS_NODE_ADDRESS_AND_LIVENESS_CHANNEL)
        light = live.node_address_and_liveness_message
        assert (light.node_id, light.state) == (node_id(1), ALIVE)
        assert (light.node_manager_address, light.node_manager_port) == (
            "127.0.0.1",
            info.node_manager_port,
        )
        assert light.object_manager_port == 9001
        assert added == [node_id(1)]
        assert env.health.nodes() == [node_id(1)]
        await env.nodes.register_node(info)  # a replay
        assert len(env.publisher.messages) == 2
        assert added == [node_id(1)]

    run(body, **NO_CHECKS)


def test_register_rejects_a_malformed_node_id() -> None:
    async def body(env: Env) -> None:
        with pytest.raises(InvalidRequestError):
            await env.nodes.register_node(GcsNodeInfo(node_id=b"short"))
        assert await env.tables.node_table.get_all() == {}
        assert env.publisher.messages == []

    run(body, **NO_CHECKS)


def test_failed_write_changes_nothing_and_the_replay_succeeds() -> None:
    async def body(env: Env) -> None:
        assert isinstance(env.store, FlakyStore)
        env.store.fail_writes = True
        with pytest.raises(UnknownOutcomeError):
            await env.nodes.register_node(node_info(1))
        assert env.nodes.check_alive([node_id(1)]) == [False]
        assert env.publisher.messages == []
        env.store.fail_writes = False
        await env.nodes.register_node(node_info(1))
        assert env.nodes.check_alive([node_id(1)]) == [True]
        env.store.fail_writes = True
        with pytest.raises(UnknownOutcomeError):
            await env.nodes.unregister_node(node_id(1), NodeDeathInfo())
        assert env.nodes.check_alive([node_id(1)]) == [True]
        assert len(env.publisher.messages) == 2

    run(body, **NO_CHECKS)


def test_a_new_head_node_replaces_the_old_one() -> None:
    async def body(env: Env) -> None:
        await env.nodes.register_node(node_info(1, is_head_node=True))
        await env.nodes.register_node(node_info(2))
        await env.nodes.register_node(node_info(3, is_head_node=True))
        old = await env.stored(1)
        assert old is not None and old.state == DEAD
        assert old.death_info.reason == NodeDeathInfo.UNEXPECTED_TERMINATION
        assert env.nodes.check_alive([node_id(i) for i in (1, 2, 3)]) == [False, True, True]
        await env.nodes.register_node(node_info(3, is_head_node=True))  # replay: no change
        assert env.nodes.check_alive([node_id(3)]) == [True]

    run(body, **NO_CHECKS)


def test_a_dead_node_is_not_revived_by_a_replayed_register() -> None:
    async def body(env: Env) -> None:
        await env.nodes.register_node(node_info(1))
        await env.nodes.unregister_node(node_id(1), NodeDeathInfo())
        await env.nodes.register_node(node_info(1))
        stored = await env.stored(1)
        assert stored is not None and stored.state == DEAD
        assert env.nodes.check_alive([node_id(1)]) == [False]

    run(body, **NO_CHECKS)


# -- deaths ----------------------------------------------------------------------------


def test_unregister_marks_dead_publishes_and_notifies() -> None:
    async def body(env: Env) -> None:
        removed: list[GcsNodeInfo] = []
        env.nodes.add_node_removed_listener(removed.append)
        await env.nodes.register_node(node_info(1))
        env.publisher.messages.clear()
        env.now_ms = 5_000
        death = NodeDeathInfo(
            reason=NodeDeathInfo.EXPECTED_TERMINATION, reason_message="received SIGTERM"
        )
        await env.nodes.unregister_node(node_id(1), death)
        stored = await env.stored(1)
        assert stored is not None
        assert (stored.state, stored.end_time_ms, stored.death_info) == (DEAD, 5_000, death)
        [info] = env.publisher.on(pubsub_pb2.GCS_NODE_INFO_CHANNEL)
        assert info.node_info_message == stored
        [live] = env.publisher.on(pubsub_pb2.GCS_NODE_ADDRESS_AND_LIVENESS_CHANNEL)
        assert live.node_address_and_liveness_message.state == DEAD
        assert live.node_address_and_liveness_message.death_info == death
        assert env.publisher.on(pubsub_pb2.RAY_ERROR_INFO_CHANNEL) == []  # expected death
        assert [n.node_id for n in removed] == [node_id(1)]
        assert env.health.nodes() == []
        assert env.nodes.check_alive([node_id(1)]) == [False]
        await env.nodes.unregister_node(node_id(1), death)  # a replay
        await env.nodes.unregister_node(node_id(9), death)  # never known
        assert len(env.publisher.messages) == 2
        assert len(removed) == 1

    run(body, **NO_CHECKS)


def test_a_raylet_that_stops_answering_dies_by_health_check() -> None:
    async def body(env: Env) -> None:
        raylet = await FakeRaylet(node_info(1)).start()
        removed: list[bytes] = []
        gone = asyncio.Event()

        async def on_removed(node: GcsNodeInfo) -> None:  # a coroutine listener
            removed.append(node.node_id)
            gone.set()

        env.nodes.add_node_removed_listener(on_removed)
        await env.nodes.register_node(raylet.node)
        await asyncio.sleep(0.3)  # ten periods of successful checks
        assert env.nodes.check_alive([node_id(1)]) == [True]
        await raylet.stop()
        await asyncio.wait_for(gone.wait(), WAIT_S)
        stored = await env.stored(1)
        assert stored is not None and stored.state == DEAD
        assert stored.death_info.reason == NodeDeathInfo.UNEXPECTED_TERMINATION
        assert stored.death_info.reason_message == HEALTH_DEATH_MESSAGE
        [error] = env.publisher.on(pubsub_pb2.RAY_ERROR_INFO_CHANNEL)
        assert error.key_id == node_id(1).hex().encode()
        assert error.error_info_message.type == "node_removed"
        assert node_id(1).hex() in error.error_info_message.error_message
        assert error.error_info_message.job_id == b"\xff" * 4
        lives = env.publisher.on(pubsub_pb2.GCS_NODE_ADDRESS_AND_LIVENESS_CHANNEL)
        assert [m.node_address_and_liveness_message.state for m in lives] == [ALIVE, DEAD]
        assert removed == [node_id(1)]
        assert env.pool.address_of(node_id(1)) is None  # its channel was dropped

    run(body)


def test_dead_nodes_beyond_the_cap_are_evicted() -> None:
    async def body(env: Env) -> None:
        env.nodes = NodeManager(
            env.tables, env.publisher, env.pool, env.health, max_dead_nodes=2
        )
        for n in (1, 2, 3):
            await env.nodes.register_node(node_info(n))
            await env.nodes.unregister_node(node_id(n), NodeDeathInfo())
        assert env.nodes.get_dead_node(node_id(1)) is None
        assert env.nodes.get_dead_node(node_id(3)) is not None
        for _ in range(1000):  # the table delete runs in the background
            if len(await env.tables.node_table.get_all()) == 2:
                break
            await asyncio.sleep(0.01)
        assert set(await env.tables.node_table.get_all()) == {node_id(2), node_id(3)}

    run(body, **NO_CHECKS)


# -- queries ---------------------------------------------------------------------------


async def four_nodes(env: Env) -> None:
    """1: head, alive; 2: alive at 10.0.0.2; 3: dead; 4: alive, named "gpu"."""
    await env.nodes.register_node(node_info(1, is_head_node=True))
    await env.nodes.register_node(node_info(2, address="10.0.0.2"))
    await env.nodes.register_node(node_info(3))
    await env.nodes.unregister_node(node_id(3), NodeDeathInfo())
    await env.nodes.register_node(node_info(4, name="gpu"))


def ids(nodes: list[GcsNodeInfo]) -> list[int]:
    return sorted(n.node_id[0] for n in nodes)


def test_get_all_node_info_filters() -> None:
    async def body(env: Env) -> None:
        await four_nodes(env)
        get = env.nodes.get_all_node_info
        everything = get(None, [], None)
        assert (ids(everything.nodes), everything.total) == ([1, 2, 3, 4], 4)
        assert ids(get(None, [], ALIVE).nodes) == [1, 2, 4]
        assert ids(get(None, [], DEAD).nodes) == [3]
        assert len(get(2, [], None).nodes) == 2
        assert len(get(0, [], None).nodes) == 4  # 0: no limit
        by_id = [Selector(node_id=node_id(3)), Selector(node_id=node_id(9))]
        assert ids(get(None, by_id, None).nodes) == [3]
        assert ids(get(None, by_id, ALIVE).nodes) == []
        assert ids(get(None, [Selector(is_head_node=True)], ALIVE).nodes) == [1]
        assert ids(get(None, [Selector(is_head_node=False)], None).nodes) == [2, 3, 4]
        assert ids(get(None, [Selector(node_name="gpu")], None).nodes) == [4]
        assert ids(get(None, [Selector(node_ip_address="10.0.0.2")], None).nodes) == [2]
        either = [Selector(node_name="gpu"), Selector(node_id=node_id(1))]
        assert ids(get(None, either, None).nodes) == [1, 4]
        assert ids(get(None, [Selector()], None).nodes) == []  # a selector that names nothing

    run(body, **NO_CHECKS)


def test_get_all_node_address_and_liveness() -> None:
    async def body(env: Env) -> None:
        await four_nodes(env)
        get = env.nodes.get_all_node_address_and_liveness
        every = get([], None, None)
        assert sorted(n.node_id[0] for n in every) == [1, 2, 3, 4]
        [dead] = get([], None, DEAD)
        assert (dead.node_id, dead.state) == (node_id(3), DEAD)
        assert dead.HasField("death_info")
        assert [n.node_id for n in get([node_id(2), node_id(2), node_id(3)], None, None)] == [
            node_id(2),
            node_id(3),
        ]
        assert len(get([], 1, ALIVE)) == 1
        [two] = get([node_id(2)], None, ALIVE)
        assert (two.node_manager_address, two.object_manager_port) == ("10.0.0.2", 9002)

    run(body, **NO_CHECKS)


# -- leading: restart notices, drain, a later term -------------------------------------


def test_new_leader_keeps_the_node_table_and_greets_alive_raylets() -> None:
    async def body(env: Env) -> None:
        raylet = await FakeRaylet(node_info(1)).start()
        try:
            await env.nodes.register_node(raylet.node)
            await env.nodes.register_node(node_info(2))
            await env.nodes.unregister_node(node_id(2), NodeDeathInfo())
            await env.stop()  # this term ends; a new leader starts over the same tables

            successor = Env(env.store)
            await successor.start()
            try:
                assert successor.nodes.check_alive([node_id(1), node_id(2)]) == [True, False]
                assert successor.publisher.messages == []  # nobody registers again
                await successor.nodes.on_leader_started()
                await until(lambda: len(raylet.requests) == 3)
                assert sorted(raylet.calls) == [
                    "NotifyGCSRestart",
                    "ReleaseUnusedActorWorkers",
                    "ReleaseUnusedBundles",
                ]
                calls = dict(raylet.requests)
                assert list(calls["ReleaseUnusedActorWorkers"].worker_ids_in_use) == []
                assert list(calls["ReleaseUnusedBundles"].bundles_in_use) == []
                assert successor.health.nodes() == [node_id(1)]
                await asyncio.sleep(0.3)  # health checks pass: still alive
                assert successor.nodes.check_alive([node_id(1)]) == [True]
            finally:
                await successor.stop()
        finally:
            await raylet.stop()

    run(body)


def test_alive_nodes_without_a_raylet_die_only_after_the_grace_period() -> None:
    async def body(env: Env) -> None:
        await env.nodes.register_node(node_info(1))  # no raylet listens for it
        await env.stop()
        successor = Env(env.store, initial_delay_s=0.5)
        await successor.start()
        try:
            await successor.nodes.on_leader_started()  # the notices fail: logged, no harm
            assert successor.nodes.check_alive([node_id(1)]) == [True]
            await until(lambda: successor.nodes.check_alive([node_id(1)]) == [False])
            stored = await successor.stored(1)
            assert stored is not None and stored.death_info.reason_message == (HEALTH_DEATH_MESSAGE)
        finally:
            await successor.stop()

    run(body, **NO_CHECKS)


def test_in_use_providers_feed_the_release_calls() -> None:
    async def body(env: Env) -> None:
        raylet = await FakeRaylet(node_info(1)).start()
        try:
            await env.nodes.register_node(raylet.node)
            env.nodes.set_in_use_providers(workers=lambda nid: [b"w" * 28] if nid else [])
            await env.nodes.on_leader_started()
            await until(lambda: len(raylet.requests) == 3)
            calls = dict(raylet.requests)
            assert list(calls["ReleaseUnusedActorWorkers"].worker_ids_in_use) == [b"w" * 28]
        finally:
            await raylet.stop()

    run(body, **NO_CHECKS)


def test_drain_asks_alive_raylets_to_shut_down() -> None:
    async def body(env: Env) -> None:
        raylet = await FakeRaylet(node_info(1)).start()
        try:
            await env.nodes.register_node(raylet.node)
            asked = env.nodes.drain_nodes([node_id(1), node_id(7)])
            assert asked == [node_id(1), node_id(7)]
            await until(lambda: len(raylet.requests) == 1)
            [(name, request)] = raylet.requests
            assert (name, request.graceful) == ("ShutdownRaylet", True)
        finally:
            await raylet.stop()

    run(body, **NO_CHECKS)


def test_stop_drops_state_and_start_rebuilds_it() -> None:
    async def body(env: Env) -> None:
        await four_nodes(env)
        await env.nodes.stop()
        assert env.nodes.get_all_node_info(None, [], None).total == 0
        await env.nodes.start(await GcsInitData.load(env.tables))
        assert ids(env.nodes.get_all_node_info(None, [], ALIVE).nodes) == [1, 2, 4]
        assert ids(env.nodes.get_all_node_info(None, [], DEAD).nodes) == [3]

    run(body, **NO_CHECKS)


def test_node_snapshot_is_kept_in_memory_only() -> None:
    async def body(env: Env) -> None:
        await env.nodes.register_node(node_info(1))
        idle = NodeSnapshot(state=NodeSnapshot.IDLE, idle_duration_ms=1500)
        env.nodes.set_node_snapshot(node_id(1), idle)
        env.nodes.set_node_snapshot(node_id(9), idle)  # unknown: ignored
        [node] = env.nodes.get_all_node_info(None, [], ALIVE).nodes
        assert node.state_snapshot == idle
        stored = await env.stored(1)
        assert stored is not None and not stored.HasField("state_snapshot")
        assert len(env.publisher.messages) == 2

    run(body, **NO_CHECKS)


def test_raylet_pool_metadata_errors_and_channels() -> None:
    async def main() -> None:
        pool = GrpcRayletClientPool(cluster_id_hex=lambda: "ab" * 28, call_timeout_s=5.0)
        raylet = await FakeRaylet(node_info(1)).start()
        try:
            await pool.notify_gcs_restart(raylet.node)
            assert raylet.metadata["ray_cluster_id"] == "ab" * 28
            assert await pool.health_check(raylet.node, 5.0) is True
            moved = GcsNodeInfo()
            moved.CopyFrom(raylet.node)
            moved.node_manager_port = next(_ports)  # nothing listens there
            with pytest.raises(UnavailableError, match="NotifyGCSRestart"):
                await pool.notify_gcs_restart(moved)
            with pytest.raises(UnavailableError):
                await pool.health_check(moved, 5.0)
            assert pool.address_of(node_id(1)) == f"127.0.0.1:{moved.node_manager_port}"
            with pytest.raises(InvalidRequestError):
                await pool.release_unused_bundles(raylet.node, ["not a bundle"])
            pool.forget(node_id(1))
            assert pool.address_of(node_id(1)) is None
        finally:
            await pool.stop()
            await raylet.stop()

    asyncio.run(main())


def test_resource_views_set_the_state_snapshot() -> None:
    async def body(env: Env) -> None:
        await env.nodes.register_node(node_info(1))
        busy = ResourceViewSyncMessage(node_activity=["1 task running"])
        env.nodes.update_alive_node(node_id(1), busy)

        def snapshot() -> NodeSnapshot:
            [node] = env.nodes.get_all_node_info(None, [], ALIVE).nodes
            return node.state_snapshot

        assert (snapshot().state, list(snapshot().node_activity)) == (
            NodeSnapshot.ACTIVE,
            ["1 task running"],
        )
        env.nodes.update_alive_node(node_id(1), ResourceViewSyncMessage(idle_duration_ms=700))
        assert (snapshot().state, snapshot().idle_duration_ms) == (NodeSnapshot.IDLE, 700)
        draining = ResourceViewSyncMessage(idle_duration_ms=900, is_draining=True)
        env.nodes.update_alive_node(node_id(1), draining)
        assert snapshot().state == NodeSnapshot.DRAINING
        env.nodes.update_alive_node(node_id(9), busy)  # unknown: ignored

    run(body, **NO_CHECKS)


def test_a_node_drained_for_preemption_dies_preempted() -> None:
    async def body(env: Env) -> None:
        for n in (1, 2, 3):
            await env.nodes.register_node(node_info(n))
        preempt = DrainNodeRequest(
            reason=DRAIN_NODE_REASON_PREEMPTION, reason_message="spot", deadline_timestamp_ms=1500
        )
        env.nodes.set_node_draining(node_id(1), preempt)  # deadline passed at death
        env.nodes.set_node_draining(node_id(2), preempt)  # died before its deadline
        env.now_ms = 2_000
        await env.nodes.on_node_failure(node_id(1))
        env.now_ms = 1_200
        await env.nodes.on_node_failure(node_id(2))
        await env.nodes.on_node_failure(node_id(3))  # never drained
        reasons = {}
        for n in (1, 2, 3):
            stored = await env.stored(n)
            assert stored is not None
            reasons[n] = (stored.death_info.reason, stored.death_info.reason_message)
        assert reasons == {
            1: (NodeDeathInfo.AUTOSCALER_DRAIN_PREEMPTED, "spot"),
            2: (NodeDeathInfo.UNEXPECTED_TERMINATION, HEALTH_DEATH_MESSAGE),
            3: (NodeDeathInfo.UNEXPECTED_TERMINATION, HEALTH_DEATH_MESSAGE),
        }
        # A preempted node is not announced as an unexpected removal.
        errors = env.publisher.on(pubsub_pb2.RAY_ERROR_INFO_CHANNEL)
        assert sorted(e.key_id for e in errors) == sorted(node_id(n).hex().encode() for n in (2, 3))

    run(body, **NO_CHECKS)
