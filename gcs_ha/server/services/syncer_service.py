"""Ray's `ray.rpc.syncer.RaySyncer` on gcs-ha: each raylet's StartSync bidi stream, a thin
shell over the SyncerHub (gcs_ha.managers.syncer_hub).

One call per raylet, held for the raylet's lifetime; a reader task hands every batch
read to the hub, and the responses are the batches the hub queues for this stream. The
stream's protocol: DESIGN.md, "Ray's services (services/)", and ray-gcs-contract.md
section 7. Errors: INVALID_ARGUMENT for a call without a valid `node_id` metadata;
UNAVAILABLE when the hub is not started (this replica does not lead) or closes the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import grpc.aio

from gcs_ha.errors import GcsHaError
from gcs_ha.managers.syncer_hub import GCS_NODE_ID, NODE_ID_BYTES, SyncerHub, SyncStream
from gcs_ha.proto.ray import ray_syncer_pb2_grpc as pb_grpc
from gcs_ha.proto.ray.ray_syncer_pb2 import RaySyncMessageBatch
from gcs_ha.server.ray_call import Context
from gcs_ha.server.status import abort_ray_call

NODE_ID_METADATA = "node_id"


class RaySyncerService(pb_grpc.RaySyncerServicer):
    """StartSync: one bidi stream per raylet, relayed through the hub."""

    def __init__(self, hub: SyncerHub) -> None:
        self._hub = hub

    async def StartSync(
        self, request_iterator: AsyncIterator[RaySyncMessageBatch], context: Context
    ) -> AsyncIterator[RaySyncMessageBatch]:
        node_id = await _node_id_of(context)
        try:
            stream = self._hub.connect(node_id)
        except GcsHaError as error:
            await abort_ray_call(context, error)
        reader = asyncio.get_running_loop().create_task(
            self._read(request_iterator, stream), name=f"syncer-read-{node_id.hex()[:8]}"
        )
        try:
            await context.send_initial_metadata(((NODE_ID_METADATA, GCS_NODE_ID.hex()),))
            while (batch := await stream.next_batch()) is not None:
                yield batch
            if stream.unavailable:
                await context.abort(grpc.StatusCode.UNAVAILABLE, stream.close_reason)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._hub.disconnect(stream)

    async def _read(self, requests: AsyncIterator[RaySyncMessageBatch], stream: SyncStream) -> None:
        """Hand every batch read to the hub; when the raylet stops sending (or the read
        fails), close the stream so the call ends."""
        try:
            async for batch in requests:
                self._hub.receive(stream, batch)
        except grpc.RpcError:
            pass  # the raylet went away; the call is ending
        finally:
            stream.close("the raylet closed its stream", unavailable=False)


async def _node_id_of(context: Context) -> bytes:
    """The raylet's node id from the `node_id` metadata (56 hex digits)."""
    for key, value in context.invocation_metadata() or ():
        if key == NODE_ID_METADATA:
            text = value.decode() if isinstance(value, bytes) else value
            try:
                node_id = bytes.fromhex(text)
            except ValueError:
                break
            if len(node_id) == NODE_ID_BYTES:
                return node_id
            break
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT, "StartSync needs metadata node_id=<56 hex digits>"
    )
    raise AssertionError("context.abort returned")  # pragma: no cover


def mount(server: grpc.aio.Server, hub: SyncerHub) -> None:
    """Serve ray.rpc.syncer.RaySyncer on `server` through `hub`."""
    pb_grpc.add_RaySyncerServicer_to_server(RaySyncerService(hub), server)  # type: ignore[no-untyped-call]
