"""A small synchronous client of the admin service, for the CLI and the test harness.

`call_on_leader` runs a leader-only call, following leader hints and retrying while the
cluster has no leader. Given the admin key, every call carries a fresh credential.

Errors: each failed call raises its `gcs_ha.errors` exception (mapped back by
`gcs_ha.server.status.error_from_rpc`): UnavailableError (unreachable, or no answer
within the timeout), NotLeaderError (with `leader_hint` when known), InvalidRequestError,
StorageError, AdminAuthError (a call other than Status without the key), or GcsHaError.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, TypeVar

import grpc

from gcs_ha.admin_auth import AUTH_KEY, credential
from gcs_ha.errors import NotLeaderError, UnavailableError
from gcs_ha.proto import admin_pb2, admin_pb2_grpc
from gcs_ha.ray_tls import process_ray_tls, sync_channel
from gcs_ha.server.status import error_from_rpc

T = TypeVar("T")


class AdminClient:
    """Admin calls to one replica's gRPC address, each bounded by `timeout` seconds.

    `key` signs the calls that need the cluster secret (gcs_ha.admin_auth). The channel
    is TLS when this process runs with Ray's RAY_USE_TLS (gcs_ha.ray_tls; ConfigError
    when its settings are incomplete), as the replicas' port then is."""

    def __init__(self, address: str, timeout: float = 5.0, key: bytes | None = None) -> None:
        self.address = address
        self.timeout = timeout
        self._key = key
        self._channel = sync_channel(address, process_ray_tls())
        self._stub = admin_pb2_grpc.AdminServiceStub(self._channel)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: str, request: Any) -> Any:
        key = self._key
        metadata = () if key is None else ((AUTH_KEY, credential(key, method, request)),)
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout, metadata=metadata)
        except grpc.RpcError as err:
            raise error_from_rpc(err, self.address) from None

    def status(self) -> admin_pb2.ReplicaStatus:
        reply: admin_pb2.ReplicaStatus = self._call("Status", admin_pb2.StatusRequest())
        return reply

    def add_member(self, node_id: str, raft_address: str, gcs_address: str) -> None:
        member = admin_pb2.Member(
            node_id=node_id, raft_address=raft_address, gcs_address=gcs_address
        )
        self._call("AddMember", admin_pb2.AddMemberRequest(member=member))

    def remove_member(self, node_id: str, raft_address: str = "") -> None:
        """Remove the member with `node_id` or `raft_address` (one may be empty)."""
        request = admin_pb2.RemoveMemberRequest(node_id=node_id, raft_address=raft_address)
        self._call("RemoveMember", request)

    def transfer_leadership(self, node_id: str = "") -> None:
        self._call("TransferLeadership", admin_pb2.TransferLeadershipRequest(node_id=node_id))

    def compact(self) -> int:
        reply: admin_pb2.CompactReply = self._call("Compact", admin_pb2.CompactRequest())
        return reply.snapshot_index

    def digest(self) -> tuple[int, str]:
        reply: admin_pb2.DigestReply = self._call("Digest", admin_pb2.DigestRequest())
        return reply.applied_index, reply.digest

    def shutdown(self) -> None:
        self._call("Shutdown", admin_pb2.ShutdownRequest())

    def backup(self) -> tuple[bytes, Iterator[bytes]]:
        """A backup from the leader this client talks to: (header JSON, image chunks).
        The chunks must be read before the client is closed; `timeout` bounds each
        chunk's arrival, not the whole transfer."""
        request = admin_pb2.BackupRequest()
        key = self._key
        metadata = () if key is None else ((AUTH_KEY, credential(key, "Backup", request)),)
        stream = self._stub.Backup(request, metadata=metadata)
        try:
            first = next(stream)
        except grpc.RpcError as err:
            raise error_from_rpc(err, self.address) from None
        return bytes(first.header), self._chunks(stream)

    def _chunks(self, stream: Any) -> Iterator[bytes]:
        try:
            for chunk in stream:
                yield bytes(chunk.data)
        except grpc.RpcError as err:
            raise error_from_rpc(err, self.address) from None


def leader_address(status: admin_pb2.ReplicaStatus) -> str | None:
    """The leader's GCS address as one replica's status knows it, or None."""
    if status.serving or status.role == "leader":
        return status.gcs_address
    for member in status.members:
        if member.node_id == status.leader_node_id and member.gcs_address:
            return member.gcs_address
    return None


def call_on_leader(
    address: str,
    call: Callable[[AdminClient], T],
    deadline_s: float = 30.0,
    timeout: float = 5.0,
    key: bytes | None = None,
) -> T:
    """Run `call` on the leader, starting from any member's `address` (clients made with
    the admin `key`).

    Follows NotLeaderError hints; without a hint, asks the members it knows of (the
    first address and the members it reported) who leads. Retries UnavailableError and
    leaderless moments until `deadline_s` passes, then re-raises the last error.
    Other errors are raised at once.
    """
    end = time.monotonic() + deadline_s
    known = [address]
    target = address
    while True:
        try:
            with AdminClient(target, timeout, key) as client:
                return call(client)
        except (NotLeaderError, UnavailableError) as exc:
            if time.monotonic() >= end:
                raise
            hint = exc.leader_hint if isinstance(exc, NotLeaderError) else None
            if hint and hint != target:
                target = hint
                continue
            time.sleep(0.2)
            target = _find_leader(known, timeout) or target


def _find_leader(known: list[str], timeout: float) -> str | None:
    """The leader's GCS address according to the first of `known` that answers, or None.

    Adds the members that replica reports to `known`, so a later search can go on
    when the first address stops answering.
    """
    for address in list(known):
        try:
            with AdminClient(address, timeout) as client:
                status = client.status()
        except UnavailableError:
            continue
        known.extend(
            m.gcs_address for m in status.members if m.gcs_address and m.gcs_address not in known
        )
        found = leader_address(status)
        if found:
            return found
    return None
