"""Ray's internal KV (InternalKVGet/Put/Del/Exists/Keys/MultiGet) over the KV table.

Keys are namespaced as Ray's GCS stores them; values go through the chunked encoding of
`large_values`. Design: DESIGN.md, "Typed tables".

Errors: those of the StoreClient (gcs_ha.errors); InvalidRequestError for an empty key
in the empty namespace (no backend stores an empty key) or a value over
MAX_KV_VALUE_BYTES; CorruptDataError for a large value whose chunks are missing.
"""

from __future__ import annotations

from collections.abc import Iterable

from gcs_ha.storage.large_values import LargeValues
from gcs_ha.storage.store_client import KV_TABLE, StoreClient

NAMESPACE_PREFIX = b"@namespace_"
NAMESPACE_SEP = b":"


def make_key(namespace: bytes, key: bytes) -> bytes:
    """The stored key of `key` in `namespace`."""
    if not namespace:
        return bytes(key)
    return NAMESPACE_PREFIX + namespace + NAMESPACE_SEP + key


def extract_key(stored: bytes) -> bytes:
    """The bare key of a stored key (Ray's rule: drop everything up to the first ':'
    after the namespace marker)."""
    if stored.startswith(NAMESPACE_PREFIX):
        _, sep, rest = stored.partition(NAMESPACE_SEP)
        if sep:
            return rest
    return stored


class InternalKv:
    """Ray's internal KV, namespaced, over one StoreClient's KV table."""

    def __init__(self, store: StoreClient) -> None:
        self.store = store
        self.large_values = LargeValues(store)

    async def get(self, namespace: bytes, key: bytes) -> bytes | None:
        """The value, or None."""
        return await self.large_values.get(make_key(namespace, key))

    async def multi_get(self, namespace: bytes, keys: Iterable[bytes]) -> dict[bytes, bytes]:
        """Bare key -> value for the keys that exist."""
        stored = {make_key(namespace, key): bytes(key) for key in keys}
        found = await self.store.multi_get(KV_TABLE, list(stored))
        values = {}
        for skey, raw in found.items():
            value = await self.large_values.resolve(skey, raw)
            if value is not None:
                values[stored[skey]] = value
        return values

    async def put(self, namespace: bytes, key: bytes, value: bytes, overwrite: bool = True) -> bool:
        """Store `value`; overwrite=False keeps an existing one. True if newly added."""
        return await self.large_values.put(make_key(namespace, key), value, overwrite)

    async def delete(self, namespace: bytes, key: bytes, del_by_prefix: bool = False) -> int:
        """Delete `key` (or, with del_by_prefix, every key starting with it); how many."""
        skey = make_key(namespace, key)
        if del_by_prefix:
            return await self.store.delete_prefix(KV_TABLE, skey)
        return int(await self.store.delete(KV_TABLE, skey))

    async def exists(self, namespace: bytes, key: bytes) -> bool:
        """Whether `key` exists in `namespace`."""
        return await self.store.exists(KV_TABLE, make_key(namespace, key))

    async def keys(self, namespace: bytes, prefix: bytes = b"") -> list[bytes]:
        """The bare keys of `namespace` starting with `prefix`, in byte order of the
        stored keys."""
        stored = await self.store.keys(KV_TABLE, make_key(namespace, prefix))
        if namespace:
            strip = len(make_key(namespace, b""))
            return [skey[strip:] for skey in stored]
        return [extract_key(skey) for skey in stored]
