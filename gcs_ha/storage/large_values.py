"""Values of Ray's internal KV up to Ray's message limit (512 MiB), stored in bounded
chunks plus a manifest, so no Raft entry and no apply handles more than one chunk;
`sweep` deletes chunk groups no manifest names. Encoding and trade-offs: DESIGN.md,
"Large internal-KV values".

Errors: InvalidRequestError for a value over MAX_KV_VALUE_BYTES; CorruptDataError when a
manifest names chunks that are not there (and did not change meanwhile); the store's.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from gcs_ha.errors import CorruptDataError, InvalidRequestError
from gcs_ha.storage.store_client import CHUNKS_TABLE, KV_TABLE, StoreClient

MIB = 1024 * 1024
CHUNK_BYTES = 4 * MIB
MAX_KV_VALUE_BYTES = 512 * MIB  # Ray's max_grpc_message_size
MAGIC = bytes.fromhex("8f3a61c2d4e5b7095a1e") + b"gcsha"
ESCAPED, MANIFEST = b"E", b"M"
_MANIFEST = struct.Struct(">16sIQ")
_INDEX = struct.Struct(">I")
GROUP_BYTES = 16
OWNER_INDEX = 0xFFFFFFFF
READ_ATTEMPTS = 3

# Chunk groups being written by this process (every InternalKv of the front end shares
# it): `sweep` never takes them for garbage.
_writing: set[bytes] = set()


@dataclass(frozen=True)
class Manifest:
    group: bytes
    count: int
    size: int

    def encode(self) -> bytes:
        return MAGIC + MANIFEST + _MANIFEST.pack(self.group, self.count, self.size)

    def chunk_keys(self) -> list[bytes]:
        return [chunk_key(self.group, i) for i in range(self.count)]


def chunk_key(group: bytes, index: int) -> bytes:
    return group + _INDEX.pack(index)


def encode_small(value: bytes) -> bytes:
    """The stored form of a value of at most CHUNK_BYTES."""
    return MAGIC + ESCAPED + value if value.startswith(MAGIC) else value


def decode(stored: bytes) -> bytes | Manifest:
    """The value a stored KV value holds, or the manifest of its chunks."""
    if not stored.startswith(MAGIC):
        return stored
    kind, body = stored[len(MAGIC) : len(MAGIC) + 1], stored[len(MAGIC) + 1 :]
    if kind == ESCAPED:
        return body
    if kind == MANIFEST and len(body) == _MANIFEST.size:
        group, count, size = _MANIFEST.unpack(body)
        return Manifest(group, count, size)
    raise CorruptDataError(
        f"a KV value starts with gcs-ha's marker but is not one of its forms ({kind!r})"
    )


class LargeValues:
    """Reads and writes KV-table values of any size up to MAX_KV_VALUE_BYTES over one
    StoreClient (layout: storage/DESIGN.md)."""

    def __init__(
        self,
        store: StoreClient,
        chunk_bytes: int = CHUNK_BYTES,
        max_value_bytes: int = MAX_KV_VALUE_BYTES,
    ) -> None:
        self._store = store
        self._chunk_bytes = chunk_bytes
        self._max_value_bytes = max_value_bytes

    async def put(self, skey: bytes, value: bytes, overwrite: bool) -> bool:
        """Store `value` under the stored key `skey`; True when the key was new."""
        if len(value) > self._max_value_bytes:
            raise InvalidRequestError(
                f"value of {len(value)} bytes exceeds the limit of {self._max_value_bytes}"
            )
        if len(value) <= self._chunk_bytes:
            return await self._store.put(KV_TABLE, skey, encode_small(value), overwrite)
        if not overwrite and await self._store.exists(KV_TABLE, skey):
            return False  # the put below would keep the old value too; skip the upload
        manifest = Manifest(
            os.urandom(GROUP_BYTES), -(-len(value) // self._chunk_bytes), len(value)
        )
        _writing.add(manifest.group)
        try:
            await self._store.put(CHUNKS_TABLE, chunk_key(manifest.group, OWNER_INDEX), skey)
            view = memoryview(value)
            for i, key in enumerate(manifest.chunk_keys()):
                start = i * self._chunk_bytes
                await self._store.put(
                    CHUNKS_TABLE, key, bytes(view[start : start + self._chunk_bytes])
                )
            return await self._store.put(KV_TABLE, skey, manifest.encode(), overwrite)
        finally:
            _writing.discard(manifest.group)

    async def get(self, skey: bytes) -> bytes | None:
        """The value under `skey`, or None."""
        stored = await self._store.get(KV_TABLE, skey)
        return None if stored is None else await self.resolve(skey, stored)

    async def resolve(self, skey: bytes, stored: bytes) -> bytes | None:
        """The value a stored KV value (read under `skey`) stands for: itself, or its
        chunks joined. A manifest whose chunks went (the key was overwritten meanwhile)
        is read again; None when the key was deleted meanwhile."""
        for _ in range(READ_ATTEMPTS):
            found = decode(stored)
            if not isinstance(found, Manifest):
                return found
            keys = found.chunk_keys()
            chunks = await self._store.multi_get(CHUNKS_TABLE, keys)
            if len(chunks) == len(keys):
                value = b"".join(chunks[key] for key in keys)
                if len(value) != found.size:
                    raise CorruptDataError(
                        f"KV value {skey!r}: {len(value)} bytes, its manifest says {found.size}"
                    )
                return value
            again = await self._store.get(KV_TABLE, skey)
            if again is None:
                return None
            if again == stored:
                break
            stored = again
        raise CorruptDataError(f"KV value {skey!r}: chunks of its manifest are missing")

    async def sweep(self) -> int:
        """Delete every chunk group its owner's manifest does not name (except those
        being written); returns how many groups went."""
        chunk_keys = await self._store.keys(CHUNKS_TABLE, b"")
        groups = {key[:GROUP_BYTES] for key in chunk_keys} - _writing
        removed = 0
        for group in sorted(groups):
            if group in _writing or await self._named(group):
                continue
            await self._store.delete_prefix(CHUNKS_TABLE, group)
            removed += 1
        return removed

    async def _named(self, group: bytes) -> bool:
        owner = await self._store.get(CHUNKS_TABLE, chunk_key(group, OWNER_INDEX))
        if owner is None:
            return False
        stored = await self._store.get(KV_TABLE, owner)
        if stored is None:
            return False
        found = decode(stored)
        return isinstance(found, Manifest) and found.group == group
