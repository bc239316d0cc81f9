"""SyncerHub: relay, snapshot, version dropping, heartbeats, dead nodes, stream lifecycle.

The hub is driven through its stream interface (what the gRPC servicer uses); the
receiver is the real ResourceManager. Streams over real gRPC are in
tests/integration/test_syncer_service.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from gcs_ha.errors import UnavailableError
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.managers.resource_manager import ResourceManager
from gcs_ha.managers.syncer_hub import GCS_NODE_ID, SyncerHub, SyncStream
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo
from gcs_ha.proto.ray.ray_syncer_pb2 import (
    COMMANDS,
    RESOURCE_VIEW,
    CommandsSyncMessage,
    RaySyncMessage,
    RaySyncMessageBatch,
    ResourceViewSyncMessage,
)

A, B, C = (bytes([n]) * 28 for n in (1, 2, 3))


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body())


def view(node: bytes, version: int, cpu: float = 1.0) -> RaySyncMessage:
    payload = ResourceViewSyncMessage(resources_available={"CPU": cpu}, resources_total={"CPU": 4})
    return RaySyncMessage(
        version=version,
        message_type=RESOURCE_VIEW,
        sync_message=payload.SerializeToString(),
        node_id=node,
    )


def batch(*messages: RaySyncMessage) -> RaySyncMessageBatch:
    return RaySyncMessageBatch(messages=list(messages))


async def drain(stream: SyncStream) -> list[tuple[bytes, int, int]]:
    """(node, type, version) of everything queued for `stream` now (no waiting)."""
    if not stream._pending:
        return []
    got = await asyncio.wait_for(stream.next_batch(), 1)
    assert got is not None
    return [(m.node_id, m.message_type, m.version) for m in got.messages]


def node(node_id: bytes, state: int = GcsNodeInfo.ALIVE) -> GcsNodeInfo:
    return GcsNodeInfo(
        node_id=node_id,
        state=state,  # type: ignore[arg-type]
        node_manager_address="127.0.0.1",
        resources_total={"CPU": 4},
    )


async def started_hub(
    beats: list[bytes] | None = None,
    receiver: ResourceManager | None = None,
    init: GcsInitData | None = None,
) -> SyncerHub:
    hub = SyncerHub(receiver=receiver, heartbeat=None if beats is None else beats.append)
    await hub.start(init or GcsInitData())
    return hub


def test_connect_refused_until_started_and_after_stop() -> None:
    async def body() -> None:
        hub = SyncerHub()
        with pytest.raises(UnavailableError):
            hub.connect(A)
        await hub.start(GcsInitData())
        stream = hub.connect(A)
        await hub.stop()
        assert stream.closed and stream.unavailable  # the call ends UNAVAILABLE
        assert await stream.next_batch() is None
        with pytest.raises(UnavailableError):
            hub.connect(A)

    run(body)


def test_relay_to_every_other_stream_keeping_origin_and_version() -> None:
    async def body() -> None:
        hub = await started_hub()
        a, b, c = hub.connect(A), hub.connect(B), hub.connect(C)
        hub.receive(a, batch(view(A, 7)))
        assert await drain(a) == []  # never echoed to its own node
        assert await drain(b) == [(A, RESOURCE_VIEW, 7)]
        assert await drain(c) == [(A, RESOURCE_VIEW, 7)]
        assert hub.version_of(A, RESOURCE_VIEW) == 7

    run(body)


def test_new_stream_gets_a_snapshot_of_the_other_nodes() -> None:
    async def body() -> None:
        hub = await started_hub()
        a, b = hub.connect(A), hub.connect(B)
        hub.receive(a, batch(view(A, 3)))
        hub.receive(b, batch(view(B, 5)))
        hub.receive(a, batch(view(A, 4)))
        c = hub.connect(C)
        assert sorted(await drain(c)) == [(A, RESOURCE_VIEW, 4), (B, RESOURCE_VIEW, 5)]

    run(body)


def test_stale_versions_are_dropped_and_not_relayed() -> None:
    async def body() -> None:
        resources = ResourceManager()
        await resources.start(GcsInitData(nodes={A: node(A)}))
        hub = await started_hub(receiver=resources)
        a, b = hub.connect(A), hub.connect(B)
        hub.receive(a, batch(view(A, 10, cpu=1)))
        await drain(b)
        # B re-sends an older copy of A's view (as a reconnecting raylet does), and A
        # repeats its current version: neither is new.
        hub.receive(b, batch(view(A, 9, cpu=3), view(A, 10, cpu=3)))
        hub.receive(a, batch(view(A, 10, cpu=3)))
        assert await drain(b) == [] and await drain(a) == []
        assert resources.resource_view()[A].resources_available["CPU"] == 1
        hub.receive(a, batch(view(A, 11, cpu=2)))
        assert await drain(b) == [(A, RESOURCE_VIEW, 11)]
        assert resources.resource_view()[A].resources_available["CPU"] == 2

    run(body)


def test_a_relayed_view_from_another_raylet_is_accepted_when_newer() -> None:
    async def body() -> None:
        hub = await started_hub()
        a, b = hub.connect(A), hub.connect(B)
        hub.receive(b, batch(view(C, 4)))  # B holds C's view (C not connected here)
        assert await drain(a) == [(C, RESOURCE_VIEW, 4)]
        assert await drain(b) == []  # B sent it: B has it

    run(body)


def test_every_batch_is_a_heartbeat_of_the_streams_node() -> None:
    async def body() -> None:
        beats: list[bytes] = []
        hub = await started_hub(beats)
        a, b = hub.connect(A), hub.connect(B)
        hub.receive(a, batch(view(A, 1)))
        hub.receive(b, batch(view(A, 1)))  # about A, stale: still B's heartbeat
        hub.receive(a, batch())
        assert beats == [A, B, A]

    run(body)


def test_dead_nodes_views_are_ignored() -> None:
    async def body() -> None:
        beats: list[bytes] = []
        init = GcsInitData(nodes={C: node(C, GcsNodeInfo.DEAD)})
        hub = await started_hub(beats, init=init)
        a, b = hub.connect(A), hub.connect(B)
        hub.receive(a, batch(view(C, 50), view(A, 1)))  # C was DEAD in the node table
        assert await drain(b) == [(A, RESOURCE_VIEW, 1)]
        hub.on_node_dead(A)
        hub.receive(a, batch(view(A, 2)))
        assert await drain(b) == []
        assert hub.version_of(A, RESOURCE_VIEW) is None
        assert sorted(await drain(hub.connect(C))) == []
        assert beats == [A]  # no heartbeat from a dead node's stream

    run(body)


def test_disconnect_forgets_the_nodes_views_and_reconnect_replaces_the_stream() -> None:
    async def body() -> None:
        hub = await started_hub()
        a, b = hub.connect(A), hub.connect(B)
        hub.receive(a, batch(view(A, 8)))
        a2 = hub.connect(A)  # A reconnects before its old call ended
        assert a.closed and a.unavailable
        assert await drain(a2) == []  # a raylet never gets its own view back
        hub.receive(a2, batch(view(A, 7)))  # older than what the hub keeps for A
        assert await drain(b) == [(A, RESOURCE_VIEW, 8)]  # (8 was queued for B before)
        assert hub.version_of(A, RESOURCE_VIEW) == 8
        hub.disconnect(a)  # the old call ends: A's views stay (a2 is current)
        assert hub.version_of(A, RESOURCE_VIEW) == 8
        hub.disconnect(a2)
        assert hub.version_of(A, RESOURCE_VIEW) is None
        assert hub.connected_nodes() == [B]
        a3 = hub.connect(A)
        hub.receive(a3, batch(view(A, 8)))  # re-sent at reconnect: B already has 8
        assert await drain(b) == []
        assert hub.version_of(A, RESOURCE_VIEW) == 8
        hub.receive(a, batch(view(A, 99)))  # the closed stream is not read any more
        assert hub.version_of(A, RESOURCE_VIEW) == 8

    run(body)


def test_commands_are_relayed_and_global_gc_reaches_every_raylet() -> None:
    async def body() -> None:
        hub = await started_hub()
        a, b = hub.connect(A), hub.connect(B)
        gc = CommandsSyncMessage(should_global_gc=True).SerializeToString()
        command = RaySyncMessage(version=1, message_type=COMMANDS, sync_message=gc, node_id=A)
        hub.receive(a, batch(command))
        assert await drain(b) == [(A, COMMANDS, 1)]
        hub.broadcast_global_gc()
        first = hub.version_of(GCS_NODE_ID, COMMANDS)
        hub.broadcast_global_gc()
        second = hub.version_of(GCS_NODE_ID, COMMANDS)
        assert first is not None and second is not None and second > first
        for stream in (a, b):
            got = await drain(stream)  # the newer command replaced the older one
            assert got == [(GCS_NODE_ID, COMMANDS, second)]

    run(body)


def test_a_slow_stream_gets_only_the_newest_view_per_node() -> None:
    async def body() -> None:
        hub = await started_hub()
        a, b = hub.connect(A), hub.connect(B)
        for version in range(1, 6):
            hub.receive(a, batch(view(A, version)))
        assert await drain(b) == [(A, RESOURCE_VIEW, 5)]

    run(body)


def test_restart_clears_views_and_streams() -> None:
    async def body() -> None:
        hub = await started_hub()
        a = hub.connect(A)
        hub.receive(a, batch(view(A, 3)))
        await hub.stop()
        await hub.start(GcsInitData())
        assert hub.messages() == [] and hub.connected_nodes() == []
        assert hub.version_of(A, RESOURCE_VIEW) is None

    run(body)
