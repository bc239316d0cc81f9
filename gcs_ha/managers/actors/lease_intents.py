"""Durable lease intents: which worker lease each actor may have outstanding at a raylet,
written before each RequestWorkerLease and taken over by a new leader, so no lease
sent by a deposed leader leaks a worker. Why and how: actors/DESIGN.md, "Failover"
(step 1) and "Module notes".

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
