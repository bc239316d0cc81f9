"""Rules every StoreClient backend shares: argument checks, the job counter, the digest.

Kept in one place so the in-memory, LMDB and replicated stores refuse the same requests
with the same errors, store the job counter the same way and hash their tables alike
(a digest computed over an InMemoryStoreClient equals one over an LmdbEnv holding the
same data).

Errors: InvalidRequestError (unknown table, empty or oversized key, oversized value),
CorruptDataError (a job counter that is not a number).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from gcs_ha.errors import CorruptDataError, InvalidRequestError
from gcs_ha.storage.store_client import MAX_KEY_BYTES, MAX_VALUE_BYTES, TABLES

# The one key of JOB_COUNTER_TABLE; its value is the last job number, in decimal ASCII
# (what Redis INCR keeps for Ray's own GCS).
JOB_COUNTER_KEY = b"JobCounter"

# Tables in the order a digest visits them.
DIGEST_TABLE_ORDER: tuple[str, ...] = tuple(sorted(TABLES))

_LEN = 8  # bytes of each length field inside the digest stream


def check_table(table: str) -> None:
    """InvalidRequestError unless `table` is one of store_client.TABLES."""
    if table not in TABLES:
        raise InvalidRequestError(f"unknown table {table!r}")


def check_key(key: bytes) -> None:
    """InvalidRequestError for an empty key or one longer than MAX_KEY_BYTES.

    Empty keys are refused by every backend because LMDB cannot store them.
    """
    n = len(key)
    if n == 0:
        raise InvalidRequestError("empty key")
    if n > MAX_KEY_BYTES:
        raise InvalidRequestError(f"key of {n} bytes exceeds the limit of {MAX_KEY_BYTES}")


def check_prefix(prefix: bytes) -> None:
    """InvalidRequestError for a prefix longer than MAX_KEY_BYTES (empty is allowed)."""
    if len(prefix) > MAX_KEY_BYTES:
        raise InvalidRequestError(
            f"prefix of {len(prefix)} bytes exceeds the key limit of {MAX_KEY_BYTES}"
        )


def check_value(value: bytes) -> None:
    """InvalidRequestError for a value larger than MAX_VALUE_BYTES."""
    if len(value) > MAX_VALUE_BYTES:
        raise InvalidRequestError(
            f"value of {len(value)} bytes exceeds the limit of {MAX_VALUE_BYTES}"
        )


def check_put(table: str, key: bytes, value: bytes) -> None:
    """All checks of a put."""
    check_table(table)
    check_key(key)
    check_value(value)


def decode_job_counter(raw: bytes | None) -> int:
    """The counter stored under JOB_COUNTER_KEY (0 when absent)."""
    if raw is None:
        return 0
    try:
        return int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptDataError(f"job counter holds {raw[:32]!r}, not a number") from exc


def encode_job_counter(value: int) -> bytes:
    """The stored form of the job counter."""
    return str(value).encode("ascii")


class TableDigest:
    """sha256 over tables and their entries, fed in a fixed order.

    The stream is unambiguous: a tag byte, then each field with an 8-byte length, so no
    two different table contents give the same stream. Callers feed every table of
    DIGEST_TABLE_ORDER (empty ones too), each with its entries in key byte order.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def table(self, name: str) -> None:
        """Start the entries of table `name`."""
        raw = name.encode()
        self._hash.update(b"T" + len(raw).to_bytes(_LEN, "big") + raw)

    def entry(self, key: bytes, value: bytes) -> None:
        """One entry of the current table."""
        update = self._hash.update
        update(b"E" + len(key).to_bytes(_LEN, "big"))
        update(key)
        update(len(value).to_bytes(_LEN, "big"))
        update(value)

    def entries(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Many entries of the current table, in key order."""
        for key, value in items:
            self.entry(key, value)

    def hexdigest(self) -> str:
        """The sha256 hex of everything fed so far."""
        return self._hash.hexdigest()
