"""The Raft log entry envelope: a versioned protobuf `LogEntry` holding a batch of requests.

A build reads every entry format from BASE_VERSION up to ENTRY_VERSION and writes the one
it is told (the cluster version, versions.py). Formats and their history: DESIGN.md,
"Entry formats and the cluster version".

Errors: CorruptDataError for an entry of a newer format than this build reads (the
message says to upgrade the replica) or one that does not parse.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from gcs_ha import unsafe
from gcs_ha.errors import CorruptDataError
from gcs_ha.proto import raft_log_pb2 as pb

BASE_VERSION = 1
"""The first entry format: every build reads it."""
ENTRY_VERSION = 1
"""The newest entry format this build reads and can write."""
MAX_ENTRY_BYTES = 48 * 2**20
"""The largest log entry the proposer may create (bytes, as handed to pysyncobj)."""

Request = pb.Request
Result = pb.Result
LogEntry = pb.LogEntry


def newest_version() -> int:
    """The newest format this replica reads: ENTRY_VERSION, or the format that
    GCS_HA_UNSAFE_ENTRY_VERSION claims (tests only, gcs_ha.unsafe)."""
    return unsafe.claimed_entry_version() or ENTRY_VERSION


def encode(requests: list[pb.Request], version: int = BASE_VERSION) -> bytes:
    """Serialize one batch of requests as a log entry of format `version`. Every format
    known so far has the same fields; a later one would branch here."""
    return pb.LogEntry(version=version, requests=requests).SerializeToString()


def decode(data: bytes, newest: int = ENTRY_VERSION) -> pb.LogEntry:
    """Parse a log entry of any format from BASE_VERSION to `newest`. Raises
    CorruptDataError for bytes that are not one, or for an entry of a format this replica
    does not know (it must be upgraded first)."""
    entry = pb.LogEntry()
    try:
        entry.ParseFromString(data)
    except DecodeError as exc:
        raise CorruptDataError(f"undecodable log entry ({len(data)} bytes): {exc}") from exc
    if entry.version > newest:
        raise CorruptDataError(
            f"log entry format {entry.version} is newer than this replica reads (formats "
            f"{BASE_VERSION} to {newest}): a newer gcs-ha wrote it; upgrade this replica"
        )
    if entry.version < BASE_VERSION:
        raise CorruptDataError(f"log entry without a format version ({len(data)} bytes)")
    return entry


def put(table: str, key: bytes, value: bytes, overwrite: bool) -> pb.Request:
    return pb.Request(put=pb.Put(table=table, key=key, value=value, overwrite=overwrite))


def delete(table: str, keys: list[bytes]) -> pb.Request:
    return pb.Request(delete=pb.Delete(table=table, keys=keys))


def delete_prefix(table: str, prefix: bytes) -> pb.Request:
    return pb.Request(delete_prefix=pb.DeletePrefix(table=table, prefix=prefix))


def next_job_id() -> pb.Request:
    return pb.Request(next_job_id=pb.NextJobId())


def barrier(term: int, node_id: str) -> pb.Request:
    return pb.Request(barrier=pb.Barrier(term=term, node_id=node_id))


def request_size(request: pb.Request) -> int:
    """Approximate payload bytes of a request, for sizing batches."""
    op = request.WhichOneof("op")
    if op == "put":
        return len(request.put.key) + len(request.put.value) + 16
    if op == "delete":
        return sum(len(k) + 4 for k in request.delete.keys) + 16
    if op == "delete_prefix":
        return len(request.delete_prefix.prefix) + 16
    return 16
