"""RaftReplica: one replica's consensus layer, as its front end sees it.

Raft, the journal, the state machine and snapshots run in a consensus process of their
own (raft_host.py), reached through `RaftLink`. This side keeps what serves Ray, on the
asyncio loop: the group-commit proposer, leadership (barrier, serving, demotion), the
replicated store and its reads (ReadIndex, then this process's read-only LMDB), and
membership operations. Its data dir layout: DESIGN.md, "The data dir".
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from gcs_ha import unsafe
from gcs_ha.consensus.api import (
    LeadershipListener,
    MemberInfo,
    ProposalCounts,
    ReplicaStatusInfo,
    StoreUse,
)
from gcs_ha.consensus.capacity import CapacityGuard
from gcs_ha.consensus.config import ReplicaConfig
from gcs_ha.consensus.envelope import MAX_ENTRY_BYTES, newest_version
from gcs_ha.consensus.leadership import Leadership
from gcs_ha.consensus.membership import MembershipDeps, MembershipOps
from gcs_ha.consensus.proposer import GroupCommitProposer
from gcs_ha.consensus.raft_link import RaftLink
from gcs_ha.consensus.read_barrier import ReadBarrier
from gcs_ha.consensus.replicated_store import ReplicatedStoreClient
from gcs_ha.consensus.versions import cluster_version
from gcs_ha.errors import NotLeaderError, StorageError
from gcs_ha.storage.lmdb_env import LmdbEnv
from gcs_ha.storage.store_client import MEMBERS_TABLE

logger = logging.getLogger(__name__)

ROLE_NAMES = {0: "follower", 1: "candidate", 2: "leader"}

OnLost = Callable[[int | None], None]


class RaftReplica:
    """One replica: its consensus process, and the front end's half of the work.

    `on_lost(exit code)` runs when the consensus process dies while the replica runs
    (after this replica stopped serving); the replica process exits then
    (server/replica_main.py), an in-process test harness only records it.
    """

    def __init__(self, config: ReplicaConfig, on_lost: OnLost | None = None) -> None:
        self.config = config
        self._lmdb_dir = config.data_dir / "lmdb"
        self._on_lost = on_lost
        self._env: LmdbEnv | None = None
        self.lost_code: int | None = None
        self.entry_version = newest_version()
        # The cluster version, with the consensus process's status it was computed for.
        self._version_of: tuple[object, int] = (None, 1)
        self._link = RaftLink(
            config,
            on_state_changed=self._on_state_changed,
            on_env_replaced=self._reopen_env,
            on_lost=self._lost,
        )
        self.capacity = CapacityGuard(
            self._lmdb_dir, self._require_env, config.map_size_bytes, config.disk_reserve_bytes
        )
        self._proposer = GroupCommitProposer(
            self._link.propose,
            config.max_inflight_entries,
            config.max_entry_bytes,
            MAX_ENTRY_BYTES - 1024,
            admit=self.capacity.admit,
            entry_version=self.cluster_version,
        )
        self._reads = ReadBarrier(self._link.read)
        self._leadership = Leadership(config.node_id, self._proposer, self._is_leader_of)
        self._store = ReplicatedStoreClient(
            self._proposer,
            self._reads.wait,
            self._require_env,
            self._not_serving_hint,
            unsafe_local_reads=unsafe.follower_reads(),
        )
        deps = MembershipDeps(
            self._store,
            self._proposer,
            self.registered_members,
            self.me,
            self.is_serving,
            self.leader_gcs_hint,
        )
        self._membership = MembershipOps(deps, self._link)
        self._started = False

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Start the consensus process and open LMDB for reading. Raises DataDirError,
        CorruptDataError, ConfigError (e.g. the Raft port is taken), StorageError."""
        await self._link.start()
        try:
            self._env = LmdbEnv.reader(self._lmdb_dir)
        except BaseException:
            await self._link.stop()
            raise
        self._started = True
        self._membership.start_registration()
        logger.info(
            "replica %s started (raft %s, gcs %s, peers %s; consensus pid %s)",
            self.config.node_id,
            self.config.raft_address,
            self.config.gcs_address,
            list(self.config.peers),
            self._link.pid,
        )

    async def stop(self) -> None:
        await self._membership.stop()
        self._leadership.demote("replica stopping")
        await self._link.stop()
        env, self._env = self._env, None
        if env is not None:
            env.close()
        logger.info("replica %s stopped", self.config.node_id)

    # -- the Replica protocol ---------------------------------------------------------

    @property
    def store(self) -> ReplicatedStoreClient:
        return self._store

    def store_without_read_barrier(self) -> ReplicatedStoreClient:
        return self._store.without_read_barrier()

    @property
    def consensus_pid(self) -> int | None:
        """The pid of this replica's consensus process."""
        return self._link.pid

    def add_listener(self, listener: LeadershipListener) -> None:
        self._leadership.add_listener(listener)

    async def wait_serving(self, timeout: float) -> bool:
        return await self._leadership.wait_serving(timeout)

    def is_serving(self) -> bool:
        return self._leadership.is_serving()

    def status(self) -> ReplicaStatusInfo:
        raft = self._link.status
        members = tuple(self.members())
        by_raft = {m.raft_address: m for m in members}
        leader = by_raft.get(raft.leader) if raft.leader else None
        return ReplicaStatusInfo(
            node_id=self.config.node_id,
            role=ROLE_NAMES.get(raft.state, "follower"),
            term=raft.term,
            commit_index=raft.commit_index,
            applied_index=raft.last_applied,
            leader_node_id=leader.node_id if leader else None,
            leader_raft_address=raft.leader,
            raft_address=self.config.raft_address,
            gcs_address=self.config.gcs_address,
            serving=self.is_serving(),
            log_length=raft.log_length,
            last_log_index=raft.last_log_index,
            has_quorum=raft.has_quorum,
            cluster_name=self.config.cluster_name,
            members=members,
            match_index=dict(raft.match_index),
            status_age_s=max(0.0, time.monotonic() - raft.taken_at) if raft.taken_at else 0.0,
            entry_version=self.entry_version,
            cluster_version=self.cluster_version(),
        )

    def cluster_version(self) -> int:
        """The entry format the leader writes: the newest every member reads
        (versions.py). Recomputed once per status of the consensus process (50 ms), not
        per entry: the members table is read from LMDB."""
        raft = self._link.status
        taken_of, version = self._version_of
        if taken_of is not raft:
            version = cluster_version(self.entry_version, raft.peers, self.registered_members())
            self._version_of = (raft, version)
        return version

    def members(self) -> list[MemberInfo]:
        """The Raft membership, named with the registrations in the members table."""
        raft = self._link.status
        by_raft = {m.raft_address: m for m in self.registered_members().values()}
        out = []
        for address in sorted({self.config.raft_address, *raft.peers}):
            if address == self.config.raft_address:
                out.append(self.me())
            else:
                out.append(by_raft.get(address, MemberInfo("", address, "")))
        return out

    def me(self) -> MemberInfo:
        """This replica as it registers itself."""
        config = self.config
        return MemberInfo(
            config.node_id, config.raft_address, config.gcs_address, self.entry_version
        )

    def registered_members(self) -> dict[str, MemberInfo]:
        """node id -> MemberInfo, from the local copy of the members table."""
        out: dict[str, MemberInfo] = {}
        if self._env is None:
            return out
        with self._env.read() as txn:
            for key, value in txn.scan(MEMBERS_TABLE):
                node_id = key.decode()
                out[node_id] = member_from_record(node_id, value)
        return out

    async def add_member(self, member: MemberInfo, timeout: float = 10.0) -> None:
        await self._membership.add(member, timeout)

    async def remove_member(
        self, node_id: str | None, raft_address: str | None = None, timeout: float = 10.0
    ) -> None:
        await self._membership.remove(node_id, raft_address, timeout)

    async def transfer_leadership(self, node_id: str | None, timeout: float = 10.0) -> str:
        return await self._membership.transfer(node_id, timeout)

    async def compact(self) -> int:
        return await self._membership.compact()

    def digest(self) -> tuple[int, str]:
        return self._require_env().digest()

    def store_use(self) -> StoreUse:
        room = self.capacity.measure()
        return StoreUse(
            map_used=room.map_used,
            map_size=room.map_size,
            data_file=room.data_file,
            disk_free=room.disk_free,
            writes_refused=self.capacity.refused,
        )

    def proposal_counts(self) -> ProposalCounts:
        proposer = self._proposer
        return ProposalCounts(
            requests=proposer.requests_proposed,
            entries=proposer.entries_proposed,
            failed=proposer.requests_failed,
            pending=proposer.pending_requests,
        )

    async def consensus_metrics(self) -> bytes:
        return await self._link.metrics_text()

    async def backup_image(self, out: Path) -> int:
        if not self.is_serving():
            raise NotLeaderError(
                "backups are taken on the leader", leader_hint=self.leader_gcs_hint() or None
            )
        await self._reads.wait()  # still the leader, with every acknowledged write applied
        return await asyncio.to_thread(_copy_image, self._require_env(), out)

    # -- what MembershipOps and benchmarks use -----------------------------------------

    def leader_gcs_hint(self) -> str:
        leader = self._link.status.leader
        if leader is None:
            return ""
        for member in self.registered_members().values():
            if member.raft_address == leader:
                return member.gcs_address
        return ""

    def proposer(self) -> GroupCommitProposer:
        return self._proposer

    def snapshots_taken(self) -> int:
        """Snapshots the consensus process started writing (as of its last status)."""
        return self._link.status.snapshots

    @property
    def read_confirmations(self) -> int:
        """ReadIndex confirmations asked for so far (observability)."""
        return self._reads.confirmations

    # -- internals --------------------------------------------------------------------

    def _on_state_changed(self, old: int, new: int, term: int) -> None:
        self._leadership.on_state_changed(old, new, term)

    def _reopen_env(self) -> None:
        """The consensus process installed a snapshot: read the new LMDB generation."""
        old = self._env
        self._env = LmdbEnv.reader(self._lmdb_dir)
        if old is not None:
            old.close()
        logger.info("reopened LMDB after a snapshot install")

    def _lost(self, code: int | None) -> None:
        self.lost_code = code
        self._leadership.demote(f"the consensus process exited (code {code})")
        if self._on_lost is not None:
            self._on_lost(code)

    def _is_leader_of(self, term: int) -> bool:
        return self._link.is_leader() and self._link.term() == term

    def _not_serving_hint(self) -> str | None:
        if self.is_serving():
            return None
        return self.leader_gcs_hint()

    def _require_env(self) -> LmdbEnv:
        if self._env is None:
            raise StorageError("the replica is not started")
        return self._env


def member_from_record(node_id: str, value: bytes) -> MemberInfo:
    """A members-table record (membership.member_record) read back. A record written
    before entry formats were registered says none: the first format."""
    doc = json.loads(value)
    version = doc.get("entry_version", 1)
    return MemberInfo(
        node_id,
        doc["raft_address"],
        doc["gcs_address"],
        version if isinstance(version, int) and version >= 1 else 1,
    )


def _copy_image(env: LmdbEnv, out: Path) -> int:
    """A compacted LMDB image of `env` as of now in `out` (fsynced); its applied index."""
    txn = env.read_txn_for_copy()
    try:
        applied = txn.applied_index()
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            env.copy_txn_to_fd(txn, fd)
        finally:
            os.close(fd)
    finally:
        txn.abort()
    return applied
