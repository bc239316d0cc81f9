"""How keys longer than LMDB's 511-byte limit are stored, in byte order.

Pure (no LMDB): `lmdb_env` uses it to encode keys and values and `ordered` to sort scans.
Format and ordering argument: DESIGN.md, "Long keys".
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from gcs_ha.errors import CorruptDataError

INLINE_KEY_BYTES = 400
_KEY_LEN_BYTES = 4


def stored_key(key: bytes) -> bytes:
    """The LMDB key under which `key` is stored."""
    if len(key) <= INLINE_KEY_BYTES:
        return key
    return key[:INLINE_KEY_BYTES] + hashlib.sha256(key).digest()


def is_long(stored: bytes) -> bool:
    """Whether a stored key stands for a long key (its value carries the full key)."""
    return len(stored) > INLINE_KEY_BYTES


def pack(key: bytes, value: bytes) -> bytes:
    """The stored value for `key`: the value itself, or full key + value for a long key."""
    if len(key) <= INLINE_KEY_BYTES:
        return value
    return len(key).to_bytes(_KEY_LEN_BYTES, "big") + key + value


def unpack_long(stored_value: bytes) -> tuple[bytes, bytes]:
    """(full key, value) from the stored value of a long key."""
    n = int.from_bytes(stored_value[:_KEY_LEN_BYTES], "big")
    end = _KEY_LEN_BYTES + n
    if n <= INLINE_KEY_BYTES or len(stored_value) < end:
        raise CorruptDataError("a long-key record is damaged (bad key length)")
    return stored_value[_KEY_LEN_BYTES:end], stored_value[end:]


def unpack_checked(key: bytes, stored_value: bytes) -> bytes:
    """The value of `key` from its stored value, checking a long key's full key."""
    if len(key) <= INLINE_KEY_BYTES:
        return stored_value
    full, value = unpack_long(stored_value)
    if full != key:
        raise CorruptDataError("a long-key record holds another key than its hash names")
    return value


def ordered(records: Iterable[tuple[bytes, bytes]], prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) in key byte order from stored (key, value) records in stored order.

    `records` must be the stored records whose stored key starts with
    `prefix[:INLINE_KEY_BYTES]`, in LMDB order. Long keys are decoded, filtered by the
    full `prefix`, and each run sharing its first INLINE_KEY_BYTES bytes is sorted.
    """
    short_prefix_ok = len(prefix) <= INLINE_KEY_BYTES
    run: list[tuple[bytes, bytes]] = []
    run_head = b""
    for skey, svalue in records:
        if not is_long(skey):
            if run:
                yield from sorted(run)
                run = []
            if short_prefix_ok:
                yield skey, svalue
            continue
        key, value = unpack_long(svalue)
        if not key.startswith(prefix):
            continue
        head = skey[:INLINE_KEY_BYTES]
        if run and head != run_head:
            yield from sorted(run)
            run = []
        run_head = head
        run.append((key, value))
    if run:
        yield from sorted(run)
