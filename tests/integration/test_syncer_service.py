"""RaySyncer, NodeResourceInfo and AutoscalerState services over real gRPC on loopback.

Raylets are played by grpc.aio clients using our generated stubs: each opens a real
StartSync bidi stream with `node_id` metadata, as Ray's raylet does. A raylet stand-in
server answers the GCS's GetResourceLoad pull. Managers and servicers are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest

from gcs_ha.errors import UnavailableError
from gcs_ha.managers.autoscaler_state_manager import AutoscalerStateManager
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.managers.resource_manager import ResourceManager
from gcs_ha.managers.syncer_hub import SyncerHub
from gcs_ha.proto.ray import autoscaler_pb2 as asc
from gcs_ha.proto.ray import autoscaler_pb2_grpc as asc_grpc
from gcs_ha.proto.ray import gcs_service_pb2 as gs
from gcs_ha.proto.ray import gcs_service_pb2_grpc as gs_grpc
from gcs_ha.proto.ray import node_manager_pb2 as nm
from gcs_ha.proto.ray import node_manager_pb2_grpc as nm_grpc
from gcs_ha.proto.ray import ray_syncer_pb2_grpc as sync_grpc
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo, ResourceDemand, ResourceLoad, ResourcesData
from gcs_ha.proto.ray.ray_syncer_pb2 import (
    RESOURCE_VIEW,
    RaySyncMessage,
    RaySyncMessageBatch,
    ResourceViewSyncMessage,
)
from gcs_ha.server.services import autoscaler_service, resource_service, syncer_service
from gcs_ha.storage.internal_kv import InternalKv
from gcs_ha.storage.memory import InMemoryStoreClient
from gcs_ha.testing.fake_raylet import FakeRaylet, node_info

A, B, C = (bytes([n]) * 28 for n in (1, 2, 3))
GCS_PORT, RAYLET_PORT = 15200, 15201
READ_TIMEOUT_S = 10
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body())


def node(node_id: bytes) -> GcsNodeInfo:
    return GcsNodeInfo(
        node_id=node_id,
        node_manager_address="127.0.0.1",
        node_manager_port=RAYLET_PORT,
        resources_total={"CPU": 4},
    )


def view(node_id: bytes, version: int, cpu: float) -> RaySyncMessageBatch:
    payload = ResourceViewSyncMessage(resources_available={"CPU": cpu}, resources_total={"CPU": 4})
    message = RaySyncMessage(
        version=version,
        message_type=RESOURCE_VIEW,
        sync_message=payload.SerializeToString(),
        node_id=node_id,
    )
    return RaySyncMessageBatch(messages=[message])


def load_raylet() -> FakeRaylet:
    """A raylet that reports queued demand when the GCS pulls."""
    raylet = FakeRaylet(node_info(b"r" * 28, RAYLET_PORT))
    load = ResourceLoad(
        resource_demands=[ResourceDemand(shape={"CPU": 1}, num_ready_requests_queued=3)]
    )
    raylet.load = ResourcesData(resources_total={"CPU": 4}, resource_load_by_shape=load)
    return raylet


class LoadPool:
    """A real, minimal raylet client pool (GetResourceLoad only)."""

    def __init__(self) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{RAYLET_PORT}")

    async def get_resource_load(self, node: GcsNodeInfo) -> nm.GetResourceLoadReply:
        stub = nm_grpc.NodeManagerServiceStub(self.channel)  # type: ignore[no-untyped-call]
        try:
            reply: nm.GetResourceLoadReply = await stub.GetResourceLoad(
                nm.GetResourceLoadRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as exc:
            raise UnavailableError(str(exc.code())) from exc
        return reply


@dataclass
class Gcs:
    hub: SyncerHub
    resources: ResourceManager
    autoscaler: AutoscalerStateManager
    beats: list[bytes] = field(default_factory=list)
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def channel(self) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{GCS_PORT}")
        self.channels.append(channel)
        return channel

    def sync(self, node_id: bytes | None) -> Any:
        """A raylet's StartSync call (our stubs), naming itself like Ray's raylet."""
        stub = sync_grpc.RaySyncerStub(self.channel())  # type: ignore[no-untyped-call]
        metadata = () if node_id is None else (("node_id", node_id.hex()),)
        return stub.StartSync(metadata=metadata)

    async def start(self, nodes: dict[bytes, GcsNodeInfo]) -> None:
        init = GcsInitData(nodes=nodes)
        for manager in (self.resources, self.hub, self.autoscaler):
            await manager.start(init)


@contextlib.asynccontextmanager
async def gcs(pull_period_s: float = 0) -> AsyncIterator[Gcs]:
    pool = LoadPool()
    resources = ResourceManager(pool, pull_period_s=pull_period_s)
    beats: list[bytes] = []
    hub = SyncerHub(receiver=resources, heartbeat=beats.append)
    kv = InternalKv(InMemoryStoreClient())
    state = AutoscalerStateManager(resources, kv, session_name="session_t")
    server = grpc.aio.server()
    syncer_service.mount(server, hub)
    resource_service.mount(server, resources)
    autoscaler_service.mount(server, state)
    server.add_insecure_port(f"127.0.0.1:{GCS_PORT}")
    raylet = load_raylet()
    await server.start()
    await raylet.start()
    g = Gcs(hub, resources, state, beats)
    try:
        yield g
    finally:
        for manager in (state, hub, resources):
            await manager.stop()
        for channel in g.channels:
            await channel.close(None)
        await pool.channel.close(None)
        await server.stop(None)
        await raylet.stop()


async def read(call: Any) -> list[tuple[bytes, int, float]]:
    """(node, version, available CPU) of the next batch on `call`."""
    batch = await asyncio.wait_for(call.read(), READ_TIMEOUT_S)
    assert batch is not EOF
    out = []
    for message in batch.messages:
        payload = ResourceViewSyncMessage.FromString(message.sync_message)
        out.append((message.node_id, message.version, payload.resources_available["CPU"]))
    return out


async def status_of(call: Any) -> grpc.StatusCode:
    with contextlib.suppress(grpc.aio.AioRpcError):
        while await asyncio.wait_for(call.read(), READ_TIMEOUT_S) is not EOF:
            pass
    code: grpc.StatusCode = await call.code()
    return code


def test_streams_relay_snapshot_drop_stale_and_beat() -> None:
    async def body() -> None:
        async with gcs() as g:
            await g.start({A: node(A), B: node(B), C: node(C)})
            a, b = g.sync(A), g.sync(B)
            metadata = await asyncio.wait_for(a.initial_metadata(), READ_TIMEOUT_S)
            assert ("node_id", "0" * 56) in list(metadata)
            await b.initial_metadata()  # B's stream is registered from here on
            await a.write(view(A, 1, cpu=3))
            assert await read(b) == [(A, 1, 3)]
            await b.write(view(B, 5, cpu=2))
            assert await read(a) == [(B, 5, 2)]
            # A repeats version 1 (stale), then sends 2: B sees only 2.
            await a.write(view(A, 1, cpu=0))
            await a.write(view(A, 2, cpu=1))
            assert await read(b) == [(A, 2, 1)]
            c = g.sync(C)  # a late raylet gets the other nodes' current views
            snapshot = sorted(await read(c))
            if len(snapshot) < 2:
                snapshot = sorted(snapshot + await read(c))
            assert snapshot == [(A, 2, 1), (B, 5, 2)]
            assert A in g.beats and B in g.beats and C not in g.beats
            # The resource manager's view followed the stream, visible over gRPC.
            resources = gs_grpc.NodeResourceInfoGcsServiceStub(g.channel())  # type: ignore[no-untyped-call]
            reply = await resources.GetAllAvailableResources(gs.GetAllAvailableResourcesRequest())
            got = {r.node_id: dict(r.resources_available) for r in reply.resources_list}
            assert got[A] == {"CPU": 1} and got[B] == {"CPU": 2} and got[C] == {"CPU": 4}
            for call in (a, b, c):
                call.cancel()

    run(body)


def test_stop_ends_every_stream_unavailable_so_raylets_reconnect() -> None:
    async def body() -> None:
        async with gcs() as g:
            await g.start({A: node(A), B: node(B)})
            a, b = g.sync(A), g.sync(B)
            await a.initial_metadata()
            await b.initial_metadata()
            await g.hub.stop()
            assert await status_of(a) == grpc.StatusCode.UNAVAILABLE
            assert await status_of(b) == grpc.StatusCode.UNAVAILABLE
            refused = g.sync(A)  # not leading: refused the same way
            assert await status_of(refused) == grpc.StatusCode.UNAVAILABLE
            await g.hub.start(GcsInitData())
            again = g.sync(A)
            await again.initial_metadata()
            assert g.hub.connected_nodes() == [A]
            again.cancel()

    run(body)


def test_reconnect_replaces_the_old_stream_and_close_forgets_the_node() -> None:
    async def body() -> None:
        async with gcs() as g:
            await g.start({A: node(A), B: node(B)})
            old = g.sync(A)
            await old.initial_metadata()
            await old.write(view(A, 4, cpu=1))
            new = g.sync(A)
            assert await status_of(old) == grpc.StatusCode.UNAVAILABLE
            await new.initial_metadata()
            b = g.sync(B)
            await b.initial_metadata()
            assert await read(b) == [(A, 4, 1)]  # A's view survived the old call's end
            await new.done_writing()  # the raylet leaves: the call ends OK
            assert await status_of(new) == grpc.StatusCode.OK
            for _ in range(100):
                if g.hub.version_of(A, RESOURCE_VIEW) is None:
                    break
                await asyncio.sleep(0.02)
            assert g.hub.version_of(A, RESOURCE_VIEW) is None
            assert g.hub.connected_nodes() == [B]
            b.cancel()

    run(body)


def test_a_stream_without_node_id_is_refused() -> None:
    async def body() -> None:
        async with gcs() as g:
            await g.start({})
            assert await status_of(g.sync(None)) == grpc.StatusCode.INVALID_ARGUMENT

    run(body)


def test_resource_and_autoscaler_services() -> None:
    async def body() -> None:
        async with gcs(pull_period_s=0.05) as g:
            await g.start({A: node(A)})
            a = g.sync(A)
            await a.initial_metadata()
            await a.write(view(A, 1, cpu=2))
            resources = gs_grpc.NodeResourceInfoGcsServiceStub(g.channel())  # type: ignore[no-untyped-call]
            usage = gs.GetAllResourceUsageReply()
            for _ in range(200):  # wait for a pull and the view to land
                usage = await resources.GetAllResourceUsage(gs.GetAllResourceUsageRequest())
                data = usage.resource_usage_data
                demands = data.resource_load_by_shape.resource_demands
                if demands and data.batch[0].resources_available["CPU"] == 2:
                    break
                await asyncio.sleep(0.05)
            (entry,) = usage.resource_usage_data.batch
            assert entry.node_id == A and dict(entry.resources_available) == {"CPU": 2}
            (summed,) = usage.resource_usage_data.resource_load_by_shape.resource_demands
            assert (dict(summed.shape), summed.num_ready_requests_queued) == ({"CPU": 1}, 3)
            totals = await resources.GetAllTotalResources(gs.GetAllTotalResourcesRequest())
            assert [dict(t.resources_total) for t in totals.resources_list] == [{"CPU": 4}]
            draining = await resources.GetDrainingNodes(gs.GetDrainingNodesRequest())
            assert (draining.status.code, list(draining.draining_nodes)) == (0, [])

            autoscaler = asc_grpc.AutoscalerStateServiceStub(g.channel())  # type: ignore[no-untyped-call]
            state = (
                await autoscaler.GetClusterResourceState(asc.GetClusterResourceStateRequest())
            ).cluster_resource_state
            assert state.cluster_session_name == "session_t"
            assert [(s.node_id, s.status) for s in state.node_states] == [(A, asc.RUNNING)]
            pending = [
                (dict(r.request.resources_bundle), r.count) for r in state.pending_resource_requests
            ]
            assert pending == [({"CPU": 1}, 3)]
            await autoscaler.ReportAutoscalingState(
                asc.ReportAutoscalingStateRequest(
                    autoscaling_state=asc.AutoscalingState(autoscaler_state_version=2)
                )
            )
            status = await autoscaler.GetClusterStatus(asc.GetClusterStatusRequest())
            assert status.autoscaling_state.autoscaler_state_version == 2
            await autoscaler.ReportClusterConfig(asc.ReportClusterConfigRequest())
            await autoscaler.RequestClusterResourceConstraint(
                asc.RequestClusterResourceConstraintRequest()
            )
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await autoscaler.DrainNode(
                    asc.DrainNodeRequest(node_id=A, deadline_timestamp_ms=-5)
                )
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            gone = await autoscaler.DrainNode(asc.DrainNodeRequest(node_id=C))
            assert gone.is_accepted  # an unknown node counts as drained
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await autoscaler.ResizeRayletResourceInstances(
                    asc.ResizeRayletResourceInstancesRequest(node_id=C, resources={"CPU": 1})
                )
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            a.cancel()

    run(body)


RAY_CLIENT = """
import json, sys
import grpc
from ray.core.generated import autoscaler_pb2, autoscaler_pb2_grpc
from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

channel = grpc.insecure_channel(sys.argv[1])
resources = gcs_service_pb2_grpc.NodeResourceInfoGcsServiceStub(channel)
usage = resources.GetAllResourceUsage(gcs_service_pb2.GetAllResourceUsageRequest(), timeout=10)
totals = resources.GetAllTotalResources(gcs_service_pb2.GetAllTotalResourcesRequest(), timeout=10)
autoscaler = autoscaler_pb2_grpc.AutoscalerStateServiceStub(channel)
state = autoscaler.GetClusterResourceState(
    autoscaler_pb2.GetClusterResourceStateRequest(), timeout=10
).cluster_resource_state
print(json.dumps({
    "usage_nodes": [d.node_id.hex() for d in usage.resource_usage_data.batch],
    "demand": [
        [dict(d.shape), d.num_ready_requests_queued]
        for d in usage.resource_usage_data.resource_load_by_shape.resource_demands
    ],
    "totals": [dict(t.resources_total) for t in totals.resources_list],
    "states": [[s.node_id.hex(), s.status, s.node_ip_address] for s in state.node_states],
    "pending": [
        [dict(r.request.resources_bundle), r.count] for r in state.pending_resource_requests
    ],
    "session": state.cluster_session_name,
}))
"""


@pytest.mark.slow
def test_rays_own_stubs_read_resource_usage_and_cluster_state() -> None:
    """Ray's generated stubs (in a subprocess: never import ray beside our protos) parse
    what the autoscaler monitor and `ray status` ask for."""

    async def body() -> None:
        async with gcs() as g:
            await g.start({A: node(A)})
            await g.resources.pull_resource_loads()
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                RAY_CLIENT,
                f"127.0.0.1:{GCS_PORT}",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 0, err.decode()
            got = json.loads(out)
            assert got["usage_nodes"] == [A.hex()]
            assert got["demand"] == [[{"CPU": 1.0}, 3]]
            assert got["totals"] == [{"CPU": 4.0}]
            assert got["states"] == [[A.hex(), asc.RUNNING, "127.0.0.1"]]
            assert got["pending"] == [[{"CPU": 1.0}, 3]]
            assert got["session"] == "session_t"

    run(body)
