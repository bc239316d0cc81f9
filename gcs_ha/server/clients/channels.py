"""The one outbound channel pool: cached grpc.aio channels to Ray's processes, keyed by
the peer's id, with the call metadata they all carry and the one conversion of a gRPC
error into UnavailableError. The raylet and core-worker clients are method sets over it.

Errors: `ChannelPool.call` raises UnavailableError for any gRPC error (unreachable peer,
error status, deadline), naming the method and the peer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio

from gcs_ha.errors import UnavailableError
from gcs_ha.ray_auth import RayAuth
from gcs_ha.ray_tls import RayTls, aio_channel

MAX_MESSAGE_BYTES = 512 * 1024 * 1024  # Ray's max_grpc_message_size
CLUSTER_ID_METADATA = "ray_cluster_id"

Stubs = TypeVar("Stubs")
ChannelOptions = Sequence[tuple[str, Any]]


def call_metadata(
    cluster_id_hex: Callable[[], str | None] | None, auth: RayAuth
) -> tuple[tuple[str, str], ...]:
    """The metadata of a call to a raylet or core worker: the cluster id once known, and
    Ray's token in token mode."""
    cluster_hex = cluster_id_hex() if cluster_id_hex is not None else None
    token = auth.metadata()
    return ((CLUSTER_ID_METADATA, cluster_hex), *token) if cluster_hex else token


def unavailable(what: str, address: str, exc: grpc.aio.AioRpcError) -> UnavailableError:
    """The one conversion of an outbound call's gRPC error: "<what> at <address>: <CODE>
    <details>" (`what`: "<method> to <peer>")."""
    detail = f"{exc.code().name} {exc.details() or ''}".rstrip()
    return UnavailableError(f"{what} at {address}: {detail}")


class Conn(Generic[Stubs]):
    """One peer's channel and stubs; `node_id` is the node it runs on, when known."""

    def __init__(self, address: str, channel: grpc.aio.Channel, stubs: Stubs, node_id: bytes):
        self.address = address
        self.channel = channel
        self.stubs = stubs
        self.node_id = node_id


class ChannelPool(Generic[Stubs]):
    """Channels by peer id, made on first use from the peer's address and kept until
    `drop` or `close`; a peer whose address changed gets a new channel."""

    def __init__(
        self,
        options: ChannelOptions,
        make_stubs: Callable[[grpc.aio.Channel], Stubs],
        cluster_id_hex: Callable[[], str | None] | None = None,
        auth: RayAuth | None = None,
        tls: RayTls | None = None,
    ) -> None:
        """`auth`: Ray's token, sent on every call in token mode (gcs_ha.ray_auth);
        `tls`: Ray's TLS settings, the channels are TLS when given (gcs_ha.ray_tls)."""
        self._options = list(options)
        self._make_stubs = make_stubs
        self._cluster_id_hex = cluster_id_hex
        self.auth = auth or RayAuth()
        self._tls = tls
        self._conns: dict[bytes, Conn[Stubs]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def conn(self, peer_id: bytes, address: str, node_id: bytes = b"") -> Conn[Stubs]:
        """The peer's channel, made (or remade for a new address) on demand."""
        key = bytes(peer_id)
        conn = self._conns.get(key)
        if conn is not None and conn.address == address:
            return conn
        if conn is not None:
            self._close_later(conn)
        channel = aio_channel(address, self._tls, self._options)
        conn = self._conns[key] = Conn(address, channel, self._make_stubs(channel), node_id)
        return conn

    async def call(
        self, conn: Conn[Stubs], rpc: Any, request: Any, *, timeout_s: float | None, what: str
    ) -> Any:
        """`await rpc(request)` (a stub method of `conn`) with the pool's metadata; a gRPC
        error becomes UnavailableError naming `what` ("<method> to <peer>") and the address."""
        try:
            return await rpc(request, timeout=timeout_s, metadata=self.metadata())
        except grpc.aio.AioRpcError as exc:
            raise unavailable(what, conn.address, exc) from exc

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return call_metadata(self._cluster_id_hex, self.auth)

    def get(self, peer_id: bytes) -> Conn[Stubs] | None:
        return self._conns.get(bytes(peer_id))

    def drop(self, peer_id: bytes) -> None:
        """Drop the peer's channel (closed in the background; its calls fail)."""
        conn = self._conns.pop(bytes(peer_id), None)
        if conn is not None:
            self._close_later(conn)

    def drop_node(self, node_id: bytes) -> None:
        """Drop the channels of every peer on the node."""
        for peer_id in [p for p, c in self._conns.items() if c.node_id == bytes(node_id)]:
            self.drop(peer_id)

    async def close(self) -> None:
        """Close every channel (calls in flight fail) and wait for the closes."""
        conns, self._conns = list(self._conns.values()), {}
        await asyncio.gather(*(conn.channel.close(None) for conn in conns))
        if self._closing:
            await asyncio.wait(list(self._closing))

    def _close_later(self, conn: Conn[Stubs]) -> None:
        task = asyncio.get_running_loop().create_task(conn.channel.close(None))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
