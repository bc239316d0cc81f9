"""The admin gRPC service: a thin shell over a `Replica`.

Every method calls one `Replica` method and converts between protobuf and the consensus
dataclasses. Every method but Status first checks the caller's proof of the cluster
secret (gcs_ha.admin_auth); Status is open to anyone (docs/security.md).

Errors: `gcs_ha.errors` exceptions, turned into gRPC statuses by gcs_ha.server.status:
UNAUTHENTICATED without the proof; FAILED_PRECONDITION (with the leader's GCS address)
for a leader-only call on a follower; INVALID_ARGUMENT for a bad request or a change that
contradicts the cluster; UNAVAILABLE while another membership change runs (retry).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc.aio

from gcs_ha.addresses import check_address
from gcs_ha.admin_auth import AdminVerifier
from gcs_ha.backup import BackupHeader
from gcs_ha.consensus.api import MemberInfo, Replica, ReplicaStatusInfo
from gcs_ha.consensus.snapshot import image_sha256
from gcs_ha.errors import ConfigError, GcsHaError, InvalidRequestError
from gcs_ha.names import check_name
from gcs_ha.proto import admin_pb2, admin_pb2_grpc
from gcs_ha.server.status import abort_with_error

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")
BACKUP_CHUNK_BYTES = 1 << 20


def status_to_proto(info: ReplicaStatusInfo) -> admin_pb2.ReplicaStatus:
    """The wire form of one replica's status."""
    return admin_pb2.ReplicaStatus(
        node_id=info.node_id,
        role=info.role,
        term=info.term,
        commit_index=info.commit_index,
        applied_index=info.applied_index,
        leader_node_id=info.leader_node_id or "",
        leader_raft_address=info.leader_raft_address or "",
        raft_address=info.raft_address,
        gcs_address=info.gcs_address,
        serving=info.serving,
        log_length=info.log_length,
        last_log_index=info.last_log_index,
        has_quorum=info.has_quorum,
        cluster_name=info.cluster_name,
        members=[member_to_proto(m) for m in info.members],
        match_index=info.match_index,
        entry_version=info.entry_version,
        cluster_version=info.cluster_version,
    )


def member_to_proto(member: MemberInfo) -> admin_pb2.Member:
    """The wire form of a member."""
    return admin_pb2.Member(
        node_id=member.node_id,
        raft_address=member.raft_address,
        gcs_address=member.gcs_address,
        entry_version=member.entry_version,
    )


def member_from_proto(member: admin_pb2.Member) -> MemberInfo:
    """A member from the wire; InvalidRequestError when a field is missing or malformed."""
    try:
        check_name("node id", member.node_id)
        check_address(member.raft_address)
        if member.gcs_address:
            check_address(member.gcs_address)
    except ConfigError as exc:
        raise InvalidRequestError(f"member {member.node_id}: {exc}") from exc
    return MemberInfo(member.node_id, member.raft_address, member.gcs_address)


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    """Status, membership, leadership transfer, compaction, digest and shutdown of a replica.

    `request_shutdown` is called by Shutdown after the reply is queued; the replica
    process then stops the gRPC server (letting the reply go out) and the replica.
    `verifier` checks the callers' credentials (a disabled one accepts every call).
    """

    def __init__(
        self,
        replica: Replica,
        request_shutdown: Callable[[], None],
        verifier: AdminVerifier | None = None,
    ) -> None:
        self._replica = replica
        self._request_shutdown = request_shutdown
        self._verifier = verifier or AdminVerifier(None)

    async def _authorize(self, method: str, request: Any, context: Context) -> None:
        """UNAUTHENTICATED (and nothing done) unless the caller proved the secret."""
        metadata = context.invocation_metadata()
        await _guarded(context, _now(lambda: self._verifier.check(method, request, metadata)))

    async def Status(
        self, request: admin_pb2.StatusRequest, context: Context
    ) -> admin_pb2.ReplicaStatus:
        return status_to_proto(await _guarded(context, _now(self._replica.status)))

    async def AddMember(
        self, request: admin_pb2.AddMemberRequest, context: Context
    ) -> admin_pb2.AddMemberReply:
        await self._authorize("AddMember", request, context)

        async def add() -> None:
            await self._replica.add_member(member_from_proto(request.member))

        await _guarded(context, add())
        return admin_pb2.AddMemberReply()

    async def RemoveMember(
        self, request: admin_pb2.RemoveMemberRequest, context: Context
    ) -> admin_pb2.RemoveMemberReply:
        await self._authorize("RemoveMember", request, context)

        async def remove() -> None:
            if not request.node_id and not request.raft_address:
                raise InvalidRequestError("give node_id or raft_address")
            try:
                if request.raft_address:
                    check_address(request.raft_address)
            except ConfigError as exc:
                raise InvalidRequestError(str(exc)) from exc
            await self._replica.remove_member(request.node_id or None, request.raft_address or None)

        await _guarded(context, remove())
        return admin_pb2.RemoveMemberReply()

    async def TransferLeadership(
        self, request: admin_pb2.TransferLeadershipRequest, context: Context
    ) -> admin_pb2.TransferLeadershipReply:
        await self._authorize("TransferLeadership", request, context)
        await _guarded(context, self._replica.transfer_leadership(request.node_id or None))
        return admin_pb2.TransferLeadershipReply()

    async def Compact(
        self, request: admin_pb2.CompactRequest, context: Context
    ) -> admin_pb2.CompactReply:
        await self._authorize("Compact", request, context)
        index = await _guarded(context, self._replica.compact())
        return admin_pb2.CompactReply(snapshot_index=index)

    async def Digest(
        self, request: admin_pb2.DigestRequest, context: Context
    ) -> admin_pb2.DigestReply:
        await self._authorize("Digest", request, context)
        # A scan of every table: in a thread, so Ray's calls go on meanwhile.
        applied, digest = await _guarded(context, asyncio.to_thread(self._replica.digest))
        return admin_pb2.DigestReply(applied_index=applied, digest=digest)

    async def Backup(
        self, request: admin_pb2.BackupRequest, context: Context
    ) -> AsyncIterator[admin_pb2.BackupChunk]:
        """The header (gcs_ha.backup), then the LMDB image in BACKUP_CHUNK_BYTES pieces;
        the image is copied to a temp file first and removed when the call ends."""
        await self._authorize("Backup", request, context)
        with tempfile.TemporaryDirectory(prefix="gcs-ha-backup-") as tmp:
            image = Path(tmp) / "image"
            applied = await _guarded(context, self._replica.backup_image(image))
            header = await asyncio.to_thread(self._backup_header, image, applied)
            yield admin_pb2.BackupChunk(header=header.to_json())
            with open(image, "rb") as f:
                while chunk := await asyncio.to_thread(f.read, BACKUP_CHUNK_BYTES):
                    yield admin_pb2.BackupChunk(data=chunk)

    def _backup_header(self, image: Path, applied: int) -> BackupHeader:
        status = self._replica.status()
        length = image.stat().st_size
        with open(image, "rb") as f:
            digest = image_sha256(f, 0, length)
        return BackupHeader(
            cluster_name=status.cluster_name,
            applied_index=applied,
            created_unix=time.time(),
            source_node=status.node_id,
            secret_fingerprint=self._verifier.fingerprint,
            image_length=length,
            image_sha256=digest,
        )

    async def Shutdown(
        self, request: admin_pb2.ShutdownRequest, context: Context
    ) -> admin_pb2.ShutdownReply:
        await self._authorize("Shutdown", request, context)
        self._request_shutdown()
        return admin_pb2.ShutdownReply()


async def _now(fn: Callable[[], T]) -> T:
    """Run a synchronous replica call inside `_guarded`'s error mapping."""
    return fn()


async def _guarded(context: Context, call: Awaitable[T]) -> T:
    """Await `call`, ending the RPC with the mapped status if it raises a GcsHaError."""
    try:
        return await call
    except GcsHaError as exc:
        await abort_with_error(context, exc)
