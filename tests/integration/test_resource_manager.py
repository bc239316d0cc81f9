"""ResourceManager and AutoscalerStateManager over a real store and real raylet stand-ins.

The raylets are real grpc.aio NodeManagerService servers on loopback answering
GetResourceLoad, DrainRaylet and ResizeLocalResourceInstances; the managers reach them
through a small real client pool (the production pool is gcs_ha.server.clients.raylets's).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from gcs_ha.errors import InvalidRequestError, NotFoundError, UnavailableError
from gcs_ha.managers.autoscaler_state_manager import (
    AUTOSCALER_NAMESPACE,
    CLUSTER_CONFIG_KEY,
    AutoscalerStateManager,
    parse_label_selector,
)
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.managers.resource_manager import ResourceManager
from gcs_ha.proto.ray import autoscaler_pb2 as asc
from gcs_ha.proto.ray.common_pb2 import (
    STRICT_SPREAD,
    Bundle,
    LabelSelector,
    LabelSelectorConstraint,
    LabelSelectorOperator,
)
from gcs_ha.proto.ray.gcs_pb2 import (
    GcsNodeInfo,
    PlacementGroupLoad,
    PlacementGroupTableData,
    ResourceDemand,
    ResourceLoad,
    ResourcesData,
)
from gcs_ha.proto.ray.ray_syncer_pb2 import (
    COMMANDS,
    RESOURCE_VIEW,
    RaySyncMessage,
    ResourceViewSyncMessage,
)
from gcs_ha.server.clients.raylets import GrpcRayletClientPool
from gcs_ha.storage.internal_kv import InternalKv
from gcs_ha.storage.memory import InMemoryStoreClient
from gcs_ha.testing.fake_raylet import FakeRaylet, node_info

A, B, C = (bytes([n]) * 28 for n in (1, 2, 3))
BASE_PORT = 15100


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body())


def node(node_id: bytes, port: int = 1, state: int = GcsNodeInfo.ALIVE, **kw: Any) -> GcsNodeInfo:
    return GcsNodeInfo(
        node_id=node_id,
        state=state,  # type: ignore[arg-type]
        node_manager_address="127.0.0.1",
        node_manager_port=port,
        resources_total={"CPU": 4, "memory": 1000},
        **kw,
    )


def demand(cpu: float, ready: int = 0, infeasible: int = 0, backlog: int = 0) -> ResourceDemand:
    return ResourceDemand(
        shape={"CPU": cpu},
        num_ready_requests_queued=ready,
        num_infeasible_requests_queued=infeasible,
        backlog_size=backlog,
    )


# -- a raylet stand-in and a tiny client pool -----------------------------------------


@contextlib.asynccontextmanager
async def raylet(node_id: bytes, port: int) -> AsyncIterator[FakeRaylet]:
    fake = await FakeRaylet(node_info(node_id, port)).start()
    try:
        yield fake
    finally:
        await fake.stop()


def raylet_pool() -> GrpcRayletClientPool:
    """The production raylet client pool, with a short deadline for the tests."""
    return GrpcRayletClientPool(call_timeout_s=5)


def view_message(node_id: bytes, version: int, **fields: Any) -> RaySyncMessage:
    payload = ResourceViewSyncMessage(**fields)
    return RaySyncMessage(
        version=version,
        message_type=RESOURCE_VIEW,
        sync_message=payload.SerializeToString(),
        node_id=node_id,
    )


# -- ResourceManager ----------------------------------------------------------------


def test_start_seeds_alive_nodes_from_registration_and_remembers_dead_ones() -> None:
    async def body() -> None:
        resources = ResourceManager()
        dead = node(C, state=GcsNodeInfo.DEAD)
        await resources.start(GcsInitData(nodes={A: node(A), B: node(B), C: dead}))
        assert sorted(resources.alive_nodes()) == [A, B]
        assert list(resources.dead_nodes()) == [C]
        totals = {t.node_id: dict(t.resources_total) for t in resources.total_resources()}
        assert totals[A] == {"CPU": 4, "memory": 1000}
        available = {
            a.node_id: dict(a.resources_available) for a in resources.available_resources()
        }
        assert available[B] == {"CPU": 4, "memory": 1000}  # until the first view
        await resources.stop()
        assert resources.alive_nodes() == {} and resources.resource_view() == {}

    run(body)


def test_views_update_availability_drain_state_and_activity() -> None:
    async def body() -> None:
        resources = ResourceManager()
        seen: list[bytes] = []
        resources.add_view_listener(lambda node_id, _view: seen.append(node_id))
        await resources.start(GcsInitData(nodes={A: node(A), B: node(B)}))
        resources.consume_sync_message(
            view_message(
                A,
                1,
                resources_total={"CPU": 8, "node:__internal_implicit_resource_x": 1},
                resources_available={"CPU": 2, "GPU": 0},
                is_draining=True,
                draining_deadline_timestamp_ms=1234,
                node_activity=["busy"],
                labels={"ray.io/node-id": A.hex()},
            )
        )
        resources.consume_sync_message(view_message(C, 1, resources_available={"CPU": 1}))
        resources.consume_sync_message(RaySyncMessage(message_type=COMMANDS, node_id=A))
        assert seen == [A]  # C is unknown, COMMANDS are not views
        available = {
            a.node_id: dict(a.resources_available) for a in resources.available_resources()
        }
        assert available[A] == {"CPU": 2}  # zero and implicit resources are omitted
        totals = {t.node_id: dict(t.resources_total) for t in resources.total_resources()}
        assert totals[A] == {"CPU": 8}
        draining = resources.draining_nodes()
        assert [(d.node_id, d.draining_deadline_timestamp_ms) for d in draining] == [(A, 1234)]
        assert resources.node_activity(A) == ["busy"]
        assert resources.resource_view()[A].labels["ray.io/node-id"] == A.hex()

    run(body)


def test_latest_view_is_read_in_place_and_copied_only_for_whole_records() -> None:
    """Schedulers read the latest view message; RPC answers copy it into the node's
    record when they are asked, so they always agree with what the schedulers saw."""

    async def body() -> None:
        resources = ResourceManager()
        await resources.start(GcsInitData(nodes={A: node(A)}))

        def usage_of_a() -> ResourcesData:
            return next(d for d in resources.resource_usage().batch if d.node_id == A)

        resources.consume_sync_message(
            view_message(
                A,
                1,
                resources_total={"CPU": 4},
                resources_available={"CPU": 4},
                labels={"zone": "a"},
            )
        )
        assert dict(usage_of_a().resources_available) == {"CPU": 4}
        resources.consume_sync_message(view_message(A, 2, resources_available={"CPU": 1}))
        view = resources.resource_view()[A]
        assert isinstance(view, ResourceViewSyncMessage)  # the message itself, no copy
        assert dict(view.resources_available) == {"CPU": 1}
        assert dict(view.resources_total) == {"CPU": 4}  # left out: the earlier totals
        assert dict(view.labels) == {"zone": "a"}
        record = usage_of_a()
        assert (dict(record.resources_available), dict(record.resources_total)) == (
            {"CPU": 1},
            {"CPU": 4},
        )
        assert dict(record.labels) == {"zone": "a"}
        resources.set_node_draining(A, 99)
        assert resources.resource_view()[A].is_draining
        assert [
            (d.node_id, d.draining_deadline_timestamp_ms) for d in resources.draining_nodes()
        ] == [(A, 99)]
        resources.consume_sync_message(view_message(A, 3, resources_available={"CPU": 3}))
        assert {
            a.node_id: dict(a.resources_available) for a in resources.available_resources()
        } == {A: {"CPU": 3}}
        assert dict(usage_of_a().resources_available) == {"CPU": 3}
        assert not usage_of_a().is_draining  # the raylet's newest view says so

    run(body)


def test_resource_usage_sums_demand_by_shape_and_carries_pg_load() -> None:
    async def body() -> None:
        resources = ResourceManager()
        await resources.start(GcsInitData(nodes={A: node(A), B: node(B)}))
        selector = LabelSelector(
            label_constraints=[
                LabelSelectorConstraint(
                    label_key="zone",
                    operator=LabelSelectorOperator.LABEL_OPERATOR_IN,
                    label_values=["a"],
                )
            ]
        )
        with_selector = demand(1, ready=5)
        with_selector.label_selectors.append(selector)
        resources.update_resource_loads(
            ResourcesData(
                node_id=A,
                resource_load={"CPU": 3},
                resource_load_by_shape=ResourceLoad(
                    resource_demands=[demand(1, ready=2), demand(2, infeasible=1), with_selector]
                ),
            )
        )
        resources.update_resource_loads(
            ResourcesData(
                node_id=B,
                resource_load_by_shape=ResourceLoad(resource_demands=[demand(1, backlog=4)]),
            )
        )
        assert not resources.update_resource_loads(ResourcesData(node_id=C))
        pg = PlacementGroupTableData(placement_group_id=b"p" * 18)
        resources.update_placement_group_load(PlacementGroupLoad(placement_group_data=[pg]))
        usage = resources.resource_usage()
        assert sorted(d.node_id for d in usage.batch) == [A, B]
        by_a = next(d for d in usage.batch if d.node_id == A)
        assert dict(by_a.resource_load) == {"CPU": 3}
        assert by_a.node_manager_address == "127.0.0.1"
        summed = {
            (tuple(sorted(d.shape.items())), len(d.label_selectors)): (
                d.num_ready_requests_queued,
                d.num_infeasible_requests_queued,
                d.backlog_size,
            )
            for d in usage.resource_load_by_shape.resource_demands
        }
        assert summed == {
            ((("CPU", 1.0),), 0): (2, 0, 4),
            ((("CPU", 2.0),), 0): (0, 1, 0),
            ((("CPU", 1.0),), 1): (5, 0, 0),
        }
        assert list(usage.placement_group_load.placement_group_data) == [pg]

    run(body)


def test_node_added_and_dead_hooks() -> None:
    async def body() -> None:
        resources = ResourceManager(max_dead_nodes=1)
        await resources.start(GcsInitData())
        assert resources.resource_usage().batch == []
        resources.on_node_added(node(A))
        resources.on_node_added(node(B))
        resources.consume_sync_message(view_message(A, 1, resources_available={"CPU": 1}))
        resources.on_node_added(node(A))  # idempotent: the view stays
        assert resources.resource_view()[A].resources_available["CPU"] == 1
        resources.on_node_dead(node(A, state=GcsNodeInfo.DEAD))
        resources.on_node_dead(node(B, state=GcsNodeInfo.DEAD))
        assert resources.alive_nodes() == {}
        assert list(resources.dead_nodes()) == [B]  # only the newest one kept
        assert not resources.update_from_view(A, ResourceViewSyncMessage())

    run(body)


def test_pull_fetches_loads_from_raylets_and_survives_a_dead_one() -> None:
    async def body() -> None:
        pool = raylet_pool()
        resources = ResourceManager(pool, pull_period_s=0)  # rounds run by hand
        port_a, port_b = BASE_PORT, BASE_PORT + 1
        async with raylet(A, port_a) as ra:
            ra.load = ResourcesData(
                node_id=A,
                resources_available={"CPU": 1},
                resource_load={"CPU": 2},
                resource_load_by_shape=ResourceLoad(resource_demands=[demand(2, ready=1)]),
            )
            nodes = {A: node(A, port_a), B: node(B, port_b)}  # nobody listens for B
            await resources.start(GcsInitData(nodes=nodes))
            await resources.pull_resource_loads()
            assert ra.calls.count("GetResourceLoad") == 1
            view = next(d for d in resources.resource_usage().batch if d.node_id == A)
            assert dict(view.resource_load) == {"CPU": 2}
            assert dict(view.resources_available) == {"CPU": 4, "memory": 1000}  # syncer's
            pulled = resources.pulled_usage(A)
            assert pulled is not None and dict(pulled.data.resources_available) == {"CPU": 1}
            before_b = resources.pulled_usage(B)
            assert before_b is not None and before_b.data.resource_load_by_shape == ResourceLoad()
        await resources.stop()
        await pool.stop()

    run(body)


def test_a_pulled_report_stands_in_for_the_view_until_the_syncer_sends_one() -> None:
    """Right after a failover the raylets' syncer streams take ~2 s to come back; the
    first GetResourceLoad report tells what the node holds meanwhile."""

    async def body() -> None:
        pool = raylet_pool()
        resources = ResourceManager(pool, pull_period_s=0)
        seen: list[bytes] = []
        resources.add_view_listener(lambda node_id, _view: seen.append(node_id))
        async with raylet(A, BASE_PORT + 3) as ra:
            ra.load = ResourcesData(
                node_id=A,
                resources_available={"CPU": 1, "CPU_group_x": 0.5},
                resources_total={"CPU": 4, "CPU_group_x": 1},
            )
            registered = node(A, BASE_PORT + 3, labels={"ray.io/node-id": A.hex()})
            await resources.start(GcsInitData(nodes={A: registered}))
            assert dict(resources.resource_view()[A].resources_available) == {
                "CPU": 4,
                "memory": 1000,
            }
            await resources.pull_resource_loads()
            view = resources.resource_view()[A]
            assert dict(view.resources_available) == {"CPU": 1, "CPU_group_x": 0.5}
            assert dict(view.resources_total) == {"CPU": 4, "CPU_group_x": 1}
            assert view.labels["ray.io/node-id"] == A.hex()  # from its registration
            assert seen == [A]  # the schedulers hear of it as of a view
            resources.consume_sync_message(
                view_message(A, 1, resources_available={"CPU": 2}, resources_total={"CPU": 4})
            )
            ra.load.resources_available["CPU"] = 3
            await resources.pull_resource_loads()  # the syncer's view now rules
            assert dict(resources.resource_view()[A].resources_available) == {"CPU": 2}
        await resources.stop()
        await pool.stop()

    run(body)


def test_periodic_pull_runs_until_stop() -> None:
    async def body() -> None:
        pool = raylet_pool()
        resources = ResourceManager(pool, pull_period_s=0.05)
        async with raylet(A, BASE_PORT + 2) as ra:
            await resources.start(GcsInitData(nodes={A: node(A, BASE_PORT + 2)}))
            for _ in range(200):
                if ra.calls.count("GetResourceLoad") >= 3:
                    break
                await asyncio.sleep(0.05)
            assert ra.calls.count("GetResourceLoad") >= 3
            await resources.stop()
            calls = ra.calls.count("GetResourceLoad")
            await asyncio.sleep(0.2)
            assert ra.calls.count("GetResourceLoad") == calls
        await pool.stop()

    run(body)


# -- AutoscalerStateManager -----------------------------------------------------------


async def autoscaler(
    resources: ResourceManager, pool: GrpcRayletClientPool | None = None, **kw: Any
) -> tuple[AutoscalerStateManager, InternalKv]:
    kv = InternalKv(InMemoryStoreClient())
    manager = AutoscalerStateManager(resources, kv, pool, **kw)
    await manager.start(GcsInitData())
    return manager, kv


def test_cluster_resource_state_node_states() -> None:
    async def body() -> None:
        resources = ResourceManager()
        alive_c = node(C, instance_id="i-c", node_type_name="worker", labels={"zone": "a"})
        init = GcsInitData(nodes={A: node(A), B: node(B, state=GcsNodeInfo.DEAD), C: alive_c})
        await resources.start(init)
        resources.update_resource_loads(
            ResourcesData(node_id=A, resources_total={"CPU": 4}, idle_duration_ms=500)
        )
        resources.consume_sync_message(view_message(A, 1, node_activity=["idle"]))
        manager, kv = await autoscaler(resources, bundles_on_node=lambda n: [b"\x07" * 18])
        await kv.put(b"session", b"session_name", b"session_x", overwrite=False)
        first = await manager.cluster_resource_state()
        second = await manager.cluster_resource_state()
        assert second.cluster_resource_state_version > first.cluster_resource_state_version
        assert second.cluster_session_name == "session_x"
        states = {s.node_id: s for s in second.node_states}
        assert states[A].status == asc.IDLE and states[A].idle_duration_ms >= 500
        assert list(states[A].node_activity) == ["idle"]
        assert dict(states[A].total_resources) == {"CPU": 4}
        assert states[B].status == asc.DEAD and not states[B].total_resources
        assert states[C].status == asc.RUNNING
        assert (states[C].instance_id, states[C].ray_node_type_name) == ("i-c", "worker")
        assert dict(states[C].labels) == {"zone": "a"}
        assert dict(states[C].dynamic_labels) == {"_PG_" + "07" * 18: ""}
        assert states[C].node_ip_address == "127.0.0.1"
        assert {s.node_state_version for s in second.node_states} == {
            second.cluster_resource_state_version
        }
        resources.set_node_draining(C, 99)
        third = await manager.cluster_resource_state()
        assert {s.node_id: s.status for s in third.node_states}[C] == asc.DRAINING

    run(body)


def test_cluster_resource_state_demand_gangs_and_constraints() -> None:
    async def body() -> None:
        resources = ResourceManager()
        await resources.start(GcsInitData(nodes={A: node(A), B: node(B)}))
        for node_id, demands in (
            (A, [demand(1, ready=2, backlog=1)]),
            (B, [demand(1, infeasible=3), demand(9)]),
        ):
            resources.update_resource_loads(
                ResourcesData(
                    node_id=node_id, resource_load_by_shape=ResourceLoad(resource_demands=demands)
                )
            )
        pg_id = b"\x05" * 18
        bundles = [
            Bundle(unit_resources={"CPU": 1}, label_selector={"zone": "!in(b,a)"}),
            Bundle(unit_resources={"CPU": 2}, node_id=A),  # placed: not demand
        ]
        pending = PlacementGroupTableData(
            placement_group_id=pg_id,
            strategy=STRICT_SPREAD,
            state=PlacementGroupTableData.RESCHEDULING,
            bundles=bundles,
        )
        created = PlacementGroupTableData(
            placement_group_id=b"\x06" * 18, state=PlacementGroupTableData.CREATED
        )
        resources.update_placement_group_load(
            PlacementGroupLoad(placement_group_data=[pending, created])
        )
        manager, _ = await autoscaler(resources)
        constraint = asc.ClusterResourceConstraint(
            resource_requests=[
                asc.ResourceRequestByCount(
                    request=asc.ResourceRequest(resources_bundle={"GPU": 1}), count=2
                )
            ]
        )
        manager.request_cluster_resource_constraint(constraint)
        state = await manager.cluster_resource_state()
        assert [
            (dict(r.request.resources_bundle), r.count) for r in state.pending_resource_requests
        ] == [({"CPU": 1}, 6)]
        (gang,) = state.pending_gang_resource_requests
        assert gang.details == f"{pg_id.hex()}:STRICT_SPREAD|RESCHEDULING"
        (request,) = gang.requests
        assert dict(request.resources_bundle) == {"CPU": 1}
        assert request.placement_constraints[0].anti_affinity.label_name == "_PG_" + pg_id.hex()
        (selected,) = gang.bundle_selectors[0].resource_requests
        assert selected.label_selectors[0] == parse_label_selector({"zone": "!in(b,a)"})
        assert list(state.cluster_resource_constraints) == [constraint]

    run(body)


def test_label_selector_parsing() -> None:
    parsed = parse_label_selector({"a": "x", "b": "!y", "c": "in(q,p)", "d": "!in(r)"})
    got = [(c.label_key, c.operator, list(c.label_values)) for c in parsed.label_constraints]
    IN, NOT_IN = (
        LabelSelectorOperator.LABEL_OPERATOR_IN,
        LabelSelectorOperator.LABEL_OPERATOR_NOT_IN,
    )
    assert got == [
        ("a", IN, ["x"]),
        ("b", NOT_IN, ["y"]),
        ("c", IN, ["p", "q"]),
        ("d", NOT_IN, ["r"]),
    ]


def test_autoscaling_state_reports_and_cluster_config() -> None:
    async def body() -> None:
        resources = ResourceManager()
        await resources.start(GcsInitData())
        manager, kv = await autoscaler(resources, session_name="s1")
        manager.report_autoscaling_state(asc.AutoscalingState(autoscaler_state_version=5))
        manager.report_autoscaling_state(asc.AutoscalingState(autoscaler_state_version=4))
        status = await manager.cluster_status()
        assert status.autoscaling_state.autoscaler_state_version == 5
        assert status.cluster_resource_state.cluster_session_name == "s1"
        config = asc.ClusterConfig(min_resources={"CPU": 2})
        await manager.report_cluster_config(config)
        stored = await kv.get(AUTOSCALER_NAMESPACE, CLUSTER_CONFIG_KEY)
        assert stored is not None and asc.ClusterConfig.FromString(stored) == config
        await manager.stop()
        await manager.start(GcsInitData())  # a new term: reports are gone, versions grow
        assert not (await manager.cluster_status()).HasField("autoscaling_state")

    run(body)


def test_drain_node() -> None:
    async def body() -> None:
        pool = raylet_pool()
        resources = ResourceManager()
        port = BASE_PORT + 3
        preempted: list[bytes] = []
        accepted: list[bytes] = []

        async def mark(node_id: bytes, request: asc.DrainNodeRequest) -> None:
            accepted.append(node_id)

        async with raylet(A, port) as ra:
            nodes = {A: node(A, port), B: node(B, BASE_PORT + 4)}  # B's raylet is gone
            await resources.start(GcsInitData(nodes=nodes))
            manager, _ = await autoscaler(
                resources, pool, on_drain_requested=preempted.append, on_drain_accepted=mark
            )
            request = asc.DrainNodeRequest(
                node_id=A,
                reason=asc.DRAIN_NODE_REASON_IDLE_TERMINATION,
                reason_message="idle",
                deadline_timestamp_ms=777,
            )
            assert (await manager.drain_node(request)).is_accepted
            drains = ra.received("DrainRaylet")
            assert [(d.reason_message, d.deadline_timestamp_ms) for d in drains] == [("idle", 777)]
            assert preempted == [A] and accepted == [A]
            assert [d.node_id for d in resources.draining_nodes()] == [A]
            ra.accept_drain = False
            rejected = await manager.drain_node(request)
            assert (rejected.is_accepted, rejected.rejection_reason_message) == (False, "busy")
            to_b = await manager.drain_node(asc.DrainNodeRequest(node_id=B))
            assert not to_b.is_accepted and "unreachable" in to_b.rejection_reason_message
            unknown = await manager.drain_node(asc.DrainNodeRequest(node_id=C))
            assert unknown.is_accepted  # not running: treated as drained
            with pytest.raises(InvalidRequestError):
                await manager.drain_node(asc.DrainNodeRequest(node_id=A, deadline_timestamp_ms=-1))
            with pytest.raises(InvalidRequestError):
                await manager.drain_node(asc.DrainNodeRequest(node_id=b"short"))
        await pool.stop()

    run(body)


def test_resize_raylet_resource_instances() -> None:
    async def body() -> None:
        pool = raylet_pool()
        resources = ResourceManager()
        port = BASE_PORT + 5
        async with raylet(A, port):
            await resources.start(GcsInitData(nodes={A: node(A, port), B: node(B, BASE_PORT + 6)}))
            manager, _ = await autoscaler(resources, pool)
            totals = await manager.resize_raylet_resource_instances(A, {"CPU": 2.0})
            assert totals == {"CPU": 2.0}
            with pytest.raises(NotFoundError):
                await manager.resize_raylet_resource_instances(C, {"CPU": 1.0})
            with pytest.raises(UnavailableError):
                await manager.resize_raylet_resource_instances(B, {"CPU": 1.0})
        await pool.stop()

    run(body)
