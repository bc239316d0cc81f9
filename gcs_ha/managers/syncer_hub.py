"""The syncer hub (Ray's RaySyncer on the GCS side): keeps the latest resource view and
command message per node and relays them between the raylets' StartSync streams.
Transport-free: `connect` returns a `SyncStream` the servicer feeds and drains.
Rules: DESIGN.md, "Module notes".

Errors: `connect` raises UnavailableError while the hub is not started (not leading).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from gcs_ha.errors import UnavailableError
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo
from gcs_ha.proto.ray.ray_syncer_pb2 import (
    COMMANDS,
    CommandsSyncMessage,
    RaySyncMessage,
    RaySyncMessageBatch,
)

log = logging.getLogger(__name__)

NODE_ID_BYTES = 28
GCS_NODE_ID = bytes(NODE_ID_BYTES)  # the GCS's syncer id: nil, 56 zeros in hex

Key = tuple[bytes, int]  # (node id, message type)


class SyncReceiver(Protocol):
    """Consumes every message the hub accepts (Ray's ReceiverInterface)."""

    def consume_sync_message(self, message: RaySyncMessage) -> None: ...


class SyncStream:
    """One raylet's StartSync call, as the hub sees it: what to send, what it knows."""

    def __init__(self, node_id: bytes) -> None:
        self.node_id = node_id
        self.closed = False
        self.unavailable = False  # closed by the hub: end the call with UNAVAILABLE
        self.close_reason = ""
        self._known: dict[Key, int] = {}  # newest version received from / sent to it
        self._pending: dict[Key, RaySyncMessage] = {}
        self._wake = asyncio.Event()

    def accepts(self, message: RaySyncMessage) -> bool:
        """Record a received message; False when this stream already had that version."""
        key = (message.node_id, message.message_type)
        if self._known.get(key, -1) >= message.version:
            return False
        self._known[key] = message.version
        return True

    def push(self, message: RaySyncMessage) -> bool:
        """Queue `message` for sending unless it is about this stream's own node or the
        raylet already has this version; a newer message replaces a queued older one."""
        if self.closed or message.node_id == self.node_id:
            return False
        key = (message.node_id, message.message_type)
        if self._known.get(key, -1) >= message.version:
            return False
        self._known[key] = message.version
        self._pending[key] = message
        self._wake.set()
        return True

    async def next_batch(self) -> RaySyncMessageBatch | None:
        """The queued messages as one batch, waiting for one; None once closed."""
        while not self._pending and not self.closed:
            self._wake.clear()
            await self._wake.wait()
        if self.closed:
            return None
        batch = RaySyncMessageBatch(messages=list(self._pending.values()))
        self._pending.clear()
        return batch

    def close(self, reason: str, unavailable: bool) -> None:
        """End the stream: `next_batch` returns None from now on."""
        if not self.closed:
            self.closed, self.unavailable, self.close_reason = True, unavailable, reason
            self._pending.clear()
            self._wake.set()


class SyncerHub:
    """The GCS end of every raylet's syncer stream (a Manager: "ray_syncer")."""

    def __init__(
        self,
        receiver: SyncReceiver | None = None,
        heartbeat: Callable[[bytes], None] | None = None,
    ) -> None:
        self._receiver = receiver
        self._heartbeat = heartbeat
        self._started = False
        self._views: dict[bytes, dict[int, RaySyncMessage]] = {}
        self._streams: dict[bytes, SyncStream] = {}
        self._dead: set[bytes] = set()

    # -- Manager lifecycle -------------------------------------------------------------

    @property
    def name(self) -> str:
        return "ray_syncer"

    async def start(self, init: GcsInitData) -> None:
        """Start empty (raylets reconnect and re-send their views), knowing which nodes
        are already DEAD."""
        self._close_all("restarted", unavailable=True)
        self._views.clear()
        self._dead = {
            bytes(node_id) for node_id, node in init.nodes.items() if node.state == GcsNodeInfo.DEAD
        }
        self._started = True

    async def stop(self) -> None:
        """Close every stream (their calls end UNAVAILABLE; raylets reconnect to the next
        leader) and drop every view."""
        self._started = False
        self._close_all("the GCS leader stepped down", unavailable=True)
        self._views.clear()
        self._dead.clear()

    # -- streams -----------------------------------------------------------------------

    def connect(self, node_id: bytes) -> SyncStream:
        """Open the stream of `node_id`'s raylet: close an older one of the same node,
        queue the views of every other node. Raises UnavailableError when not started."""
        if not self._started:
            raise UnavailableError("the syncer is not running on this replica")
        node_id = bytes(node_id)
        old = self._streams.pop(node_id, None)
        if old is not None:
            log.info("syncer: node %s reconnected; closing its older stream", node_id.hex())
            old.close("replaced by a newer stream of the same node", unavailable=True)
        stream = self._streams[node_id] = SyncStream(node_id)
        for views in self._views.values():
            for message in views.values():
                stream.push(message)
        return stream

    def receive(self, stream: SyncStream, batch: RaySyncMessageBatch) -> None:
        """Take a batch read from `stream`: a heartbeat of its node, then each message
        that is new to this stream and to the hub is kept, consumed and relayed."""
        if stream.closed:
            return
        if self._heartbeat is not None and stream.node_id not in self._dead:
            self._call_heartbeat(stream.node_id)
        for message in batch.messages:
            if stream.accepts(message):
                self._consume(message)

    def disconnect(self, stream: SyncStream) -> None:
        """The stream's call ended: forget it and its node's messages (Ray's RemoveNode;
        the raylet re-sends them when it reconnects)."""
        stream.close("disconnected", unavailable=False)
        if self._streams.get(stream.node_id) is stream:
            del self._streams[stream.node_id]
            self._views.pop(stream.node_id, None)

    # -- hooks -------------------------------------------------------------------------

    def on_node_dead(self, node_id: bytes) -> None:
        """The node was declared DEAD: drop its views and ignore any that still come."""
        node_id = bytes(node_id)
        self._dead.add(node_id)
        self._views.pop(node_id, None)

    def broadcast_global_gc(self) -> None:
        """Ask every raylet to run a global GC (Ray's TryGlobalGC): a COMMANDS message
        from the GCS's own id, versioned by the clock."""
        kept = self._views.get(GCS_NODE_ID, {}).get(COMMANDS)
        version = max(time.time_ns(), kept.version + 1 if kept is not None else 0)
        command = CommandsSyncMessage(should_global_gc=True)
        self._consume(
            RaySyncMessage(
                version=version,
                message_type=COMMANDS,
                sync_message=command.SerializeToString(),
                node_id=GCS_NODE_ID,
            )
        )

    # -- reading -----------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._started

    def connected_nodes(self) -> list[bytes]:
        """Ids of the nodes whose stream is open."""
        return list(self._streams)

    def messages(self) -> list[RaySyncMessage]:
        """Every message kept, newest per (node, type)."""
        return [m for views in self._views.values() for m in views.values()]

    def version_of(self, node_id: bytes, message_type: int) -> int | None:
        """The version kept for (node, type), or None."""
        kept = self._views.get(bytes(node_id), {}).get(message_type)
        return None if kept is None else kept.version

    # -- internals ---------------------------------------------------------------------

    def _consume(self, message: RaySyncMessage) -> None:
        node_id = bytes(message.node_id)
        if node_id in self._dead:
            return
        views = self._views.setdefault(node_id, {})
        kept = views.get(message.message_type)
        if kept is not None and kept.version >= message.version:
            return
        views[message.message_type] = message
        if self._receiver is not None:
            try:
                self._receiver.consume_sync_message(message)
            except Exception:
                log.exception("syncer receiver failed on a message from %s", node_id.hex())
        for stream in self._streams.values():
            stream.push(message)

    def _call_heartbeat(self, node_id: bytes) -> None:
        assert self._heartbeat is not None
        try:
            self._heartbeat(node_id)
        except Exception:
            log.exception("syncer heartbeat hook failed for %s", node_id.hex())

    def _close_all(self, reason: str, unavailable: bool) -> None:
        streams: Iterable[SyncStream] = list(self._streams.values())
        self._streams.clear()
        for stream in streams:
            stream.close(reason, unavailable)
