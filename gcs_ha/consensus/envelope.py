"""The Raft log entry envelope: a versioned protobuf `LogEntry` holding a batch of requests.

A log entry is never a pickled call: it is `gcs_ha.raft.LogEntry` bytes, so any replica
of any version can tell what an entry is, and refuse one it does not understand instead
of applying it wrongly.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from gcs_ha.errors import CorruptDataError
from gcs_ha.proto import raft_log_pb2 as pb

# Version 1: Put, Delete, DeletePrefix, NextJobId, Barrier.
ENTRY_VERSION = 1
MAX_ENTRY_BYTES = 48 * 2**20
"""The largest log entry the proposer may create (bytes, as handed to pysyncobj)."""

Request = pb.Request
Result = pb.Result
LogEntry = pb.LogEntry


def encode(requests: list[pb.Request]) -> bytes:
    """Serialize one batch of requests as a log entry."""
    return pb.LogEntry(version=ENTRY_VERSION, requests=requests).SerializeToString()


def decode(data: bytes) -> pb.LogEntry:
    """Parse a log entry. Raises CorruptDataError for bytes that are not one, or for an
    entry of a version this replica does not know (it must be upgraded first)."""
    entry = pb.LogEntry()
    try:
        entry.ParseFromString(data)
    except DecodeError as exc:
        raise CorruptDataError(f"undecodable log entry ({len(data)} bytes): {exc}") from exc
    if entry.version != ENTRY_VERSION:
        raise CorruptDataError(
            f"log entry version {entry.version} is not supported (this replica knows "
            f"{ENTRY_VERSION}); upgrade this replica"
        )
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
