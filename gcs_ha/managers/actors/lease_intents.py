"""Durable lease intents: which worker lease each actor may have outstanding at a raylet.

Why: a leader that dies while a RequestWorkerLease is queued at a raylet leaves a lease
that the raylet grants later, to nobody (the reply goes to a dead connection): a leaked
worker and its resources. Ray's GCS, restarted, cannot find such leases. Here the
scheduler writes the intent (actor id -> node id, lease id) before it sends each lease
request, and a new leader takes over every intent it finds: an actor still waiting for a
worker asks for the same lease id at the same raylet again (the raylet answers with the
worker it granted, or joins the queued request), the others are cancelled
(CancelWorkerLease). A worker leased but never given its constructor is not freed by
ReleaseUnusedActorWorkers (Ray 2.60 frees only workers that host an actor), so asking
again is what keeps such a lease from leaking. Because the intent is written first, a
deposed leader cannot send a lease at all (its write cannot commit), and every lease ever
sent is known to the next leader.

Storage: the internal KV (replicated with everything else), namespace
`__gcs_ha_actor_leases`, key = actor id in hex, value = node id (28 bytes) + lease id
(32 bytes). One intent per actor (the latest lease request); it is cleared when the actor
becomes ALIVE or is destroyed (in the same batch as that write, usually one Raft entry).

Errors: the store's (UnavailableError, NotLeaderError, UnknownOutcomeError, ...).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from gcs_ha.storage.internal_kv import InternalKv

log = logging.getLogger(__name__)

NAMESPACE = b"__gcs_ha_actor_leases"
NODE_ID_BYTES = 28
LEASE_ID_BYTES = 32


@dataclass(frozen=True)
class LeaseIntent:
    """A lease request an actor may have outstanding."""

    actor_id: bytes
    node_id: bytes
    lease_id: bytes


class ActorLeaseIntents:
    """The intents in the internal KV."""

    def __init__(self, kv: InternalKv) -> None:
        self._kv = kv

    async def record(self, actor_id: bytes, node_id: bytes, lease_id: bytes) -> None:
        """Write the intent of `actor_id` (replacing its previous one)."""
        await self._kv.put(NAMESPACE, _key(actor_id), bytes(node_id) + bytes(lease_id))

    async def clear(self, actor_id: bytes) -> None:
        """Drop the intent of `actor_id` (nothing if it has none)."""
        await self._kv.delete(NAMESPACE, _key(actor_id))

    async def clear_many(self, actor_ids: Iterable[bytes]) -> None:
        """Drop several intents (concurrently: they share replicated writes)."""
        await asyncio.gather(*(self.clear(actor_id) for actor_id in actor_ids))

    async def clear_all(self) -> None:
        """Drop every intent (a new leader, once it cancelled them all)."""
        await self._kv.delete(NAMESPACE, b"", True)

    async def load(self) -> list[LeaseIntent]:
        """Every intent stored (unreadable records are logged and skipped)."""
        keys = await self._kv.keys(NAMESPACE, b"")
        if not keys:
            return []
        values = await self._kv.multi_get(NAMESPACE, keys)
        intents: list[LeaseIntent] = []
        for key, value in values.items():
            try:
                actor_id = bytes.fromhex(key.decode())
            except (UnicodeDecodeError, ValueError):
                actor_id = b""
            if not actor_id or len(value) != NODE_ID_BYTES + LEASE_ID_BYTES:
                log.warning("skipping an unreadable actor lease intent %r", key)
                continue
            intents.append(
                LeaseIntent(actor_id, bytes(value[:NODE_ID_BYTES]), bytes(value[NODE_ID_BYTES:]))
            )
        return intents


def _key(actor_id: bytes) -> bytes:
    return bytes(actor_id).hex().encode()
