"""RaftReplica: one replica's consensus layer, assembled.

Data dir layout (the rest of the data dir belongs to the process that runs us):
    lmdb/            the tables (LMDB), with the applied Raft index
    raft/journal     the durable Raft log (+ journal.meta: term and vote; journal.commit)
    raft/snapshot    the latest snapshot (LMDB image + Raft position)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

from gcs_ha import unsafe
from gcs_ha.consensus import _pysyncobj as ps
from gcs_ha.consensus.api import (
    LeadershipListener,
    MemberInfo,
    ReplicaStatusInfo,
)
from gcs_ha.consensus.config import ReplicaConfig
from gcs_ha.consensus.journal import DurableJournal
from gcs_ha.consensus.leadership import Leadership
from gcs_ha.consensus.membership import MembershipOps
from gcs_ha.consensus.proposer import GroupCommitProposer
from gcs_ha.consensus.raft_node import ROLE_NAMES, RaftNode
from gcs_ha.consensus.replicated_store import ReplicatedStoreClient
from gcs_ha.consensus.snapshot import read_header
from gcs_ha.consensus.snapshotter import Snapshotter
from gcs_ha.consensus.state_machine import LmdbStateMachine
from gcs_ha.errors import CorruptDataError, StorageError
from gcs_ha.storage.lmdb_env import LmdbEnv
from gcs_ha.storage.store_client import MEMBERS_TABLE

logger = logging.getLogger(__name__)


def _fatal(what: str, exc: BaseException) -> None:
    """A replica that cannot keep its state machine exact must stop, not diverge."""
    logger.critical("FATAL: %s: %r; stopping this replica", what, exc, exc_info=exc)
    logging.shutdown()
    os._exit(70)


class RaftReplica:
    """One replica: Raft node + LMDB state machine + replicated store + leadership."""

    def __init__(self, config: ReplicaConfig) -> None:
        self.config = config
        self._lmdb_dir = config.data_dir / "lmdb"
        self._raft_dir = config.data_dir / "raft"
        self._node: RaftNode | None = None
        self._sm: LmdbStateMachine | None = None
        self._journal: DurableJournal | None = None
        self._snapshotter: Snapshotter | None = None
        self._proposer: GroupCommitProposer | None = None
        self._leadership: Leadership | None = None
        self._store: ReplicatedStoreClient | None = None
        self._membership: MembershipOps | None = None
        self._pending_listeners: list[LeadershipListener] = []

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Open the data dir and join the Raft group. Raises DataDirError/CorruptDataError."""
        ps.apply_patches()
        loop = asyncio.get_running_loop()
        self._raft_dir.mkdir(parents=True, exist_ok=True)
        dump = self._raft_dir / "snapshot"
        _check_dump(dump)
        env = self._open_env()
        sm = LmdbStateMachine(env, _fatal)
        journal = DurableJournal(self._raft_dir / "journal")
        snapshotter = Snapshotter(sm, self._lmdb_dir, dump, self._open_env, ps.TCPNode)
        proposer = GroupCommitProposer(
            self._propose,
            self.config.max_inflight_entries,
            self.config.max_entry_bytes,
            ps.MAX_ENTRY_BYTES - 1024,
        )
        leadership = Leadership(self.config.node_id, proposer, self._is_leader_of)
        for listener in self._pending_listeners:
            leadership.add_listener(listener)
        self._sm, self._journal, self._snapshotter = sm, journal, snapshotter
        self._proposer, self._leadership = proposer, leadership
        self._store = ReplicatedStoreClient(
            proposer,
            lambda: self._require_sm().env,
            self._not_serving_hint,
            unsafe_local_reads=unsafe.follower_reads(),
        )
        node = RaftNode(
            loop=loop,
            sm=sm,
            self_address=self.config.raft_address,
            peers=list(self.config.peers),
            conf_factory=lambda on_state: self._make_conf(journal, dump, snapshotter, on_state),
            on_state_changed=leadership.on_state_changed,
            journal_failure=lambda: journal.failure,
            on_fatal=_fatal,
        )
        self._node = node
        self._membership = MembershipOps(self, node)
        node.start()
        self._membership.start_registration()
        logger.info(
            "replica %s started (raft %s, gcs %s, peers %s)",
            self.config.node_id,
            self.config.raft_address,
            self.config.gcs_address,
            list(self.config.peers),
        )

    async def stop(self) -> None:
        if self._membership is not None:
            await self._membership.stop()
        if self._leadership is not None:
            self._leadership.demote("replica stopping")
        node, self._node = self._node, None
        if node is not None:
            await asyncio.to_thread(node.stop)
        if self._journal is not None:
            self._journal.close()
        if self._sm is not None:
            self._sm.env.close()
        logger.info("replica %s stopped", self.config.node_id)

    # -- the Replica protocol ---------------------------------------------------------

    @property
    def store(self) -> ReplicatedStoreClient:
        if self._store is None:
            raise StorageError("the replica is not started")
        return self._store

    def add_listener(self, listener: LeadershipListener) -> None:
        if self._leadership is None:
            self._pending_listeners.append(listener)
        else:
            self._leadership.add_listener(listener)

    async def wait_serving(self, timeout: float) -> bool:
        return await self._require_leadership().wait_serving(timeout)

    def is_serving(self) -> bool:
        return self._leadership is not None and self._leadership.is_serving()

    def status(self) -> ReplicaStatusInfo:
        node = self._require_node()
        raft = node.status
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
            match_index=dict(raft.match_index) if raft.state == 2 else {},
        )

    def members(self) -> list[MemberInfo]:
        """The Raft membership, named with the registrations in the members table."""
        node = self._require_node()
        raft = node.status
        registered = self.registered_members()
        by_raft = {m.raft_address: m for m in registered.values()}
        addresses = sorted({self.config.raft_address, *raft.peers})
        out = []
        for address in addresses:
            if address == self.config.raft_address:
                out.append(MemberInfo(self.config.node_id, address, self.config.gcs_address))
            else:
                out.append(by_raft.get(address, MemberInfo("", address, "")))
        return out

    def registered_members(self) -> dict[str, MemberInfo]:
        """node id -> MemberInfo, from the local copy of the members table."""
        out: dict[str, MemberInfo] = {}
        with self.snapshotter().env_lock, self._require_sm().env.read() as txn:
            for key, value in txn.scan(MEMBERS_TABLE):
                doc = json.loads(value)
                node_id = key.decode()
                out[node_id] = MemberInfo(node_id, doc["raft_address"], doc["gcs_address"])
        return out

    async def add_member(self, member: MemberInfo, timeout: float = 10.0) -> None:
        await self._require_membership().add(member, timeout)

    async def remove_member(self, node_id: str, timeout: float = 10.0) -> None:
        await self._require_membership().remove(node_id, timeout)

    async def transfer_leadership(self, node_id: str | None, timeout: float = 10.0) -> None:
        await self._require_membership().transfer(node_id, timeout)

    async def compact(self) -> int:
        return await self._require_membership().compact()

    def digest(self) -> tuple[int, str]:
        snapshotter = self._snapshotter
        if snapshotter is None:
            raise StorageError("the replica is not started")
        with snapshotter.env_lock:
            return self._require_sm().env.digest()

    # -- internals used by MembershipOps ----------------------------------------------

    def leader_gcs_hint(self) -> str:
        raft = self._require_node().status
        if raft.leader is None:
            return ""
        for member in self.registered_members().values():
            if member.raft_address == raft.leader:
                return member.gcs_address
        return ""

    def proposer(self) -> GroupCommitProposer:
        if self._proposer is None:
            raise StorageError("the replica is not started")
        return self._proposer

    def snapshotter(self) -> Snapshotter:
        if self._snapshotter is None:
            raise StorageError("the replica is not started")
        return self._snapshotter

    # -- internals --------------------------------------------------------------------

    def _open_env(self) -> LmdbEnv:
        # Data pages are fsynced at each (per-tick) commit; the meta page is not: a system
        # crash may undo the last commit, whose entries the fsynced Raft journal still
        # holds and replays (apply is idempotent by index). One fsync per tick, not two.
        return LmdbEnv(self._lmdb_dir, sync=True, metasync=False)

    def _propose(self, data: bytes, done: Any) -> None:
        self._require_node().propose(data, done)

    def _is_leader_of(self, term: int) -> bool:
        node = self._node
        return node is not None and node.is_leader() and node.term() == term

    def _not_serving_hint(self) -> str | None:
        if self.is_serving():
            return None
        return self.leader_gcs_hint()

    def _make_conf(
        self, journal: DurableJournal, dump: Path, snapshotter: Snapshotter, on_state: Any
    ) -> Any:
        c = self.config
        return ps.make_conf(
            bind_address=c.raft_address,
            password=c.secret,
            insecure=c.insecure,
            journal=journal,
            full_dump_file=str(dump),
            serializer=snapshotter.serialize,
            deserializer=snapshotter.deserialize,
            serialize_checker=snapshotter.check,
            on_state_changed=on_state,
            timing=c.timing,
            log_compaction_min_entries=c.compaction_min_entries,
        )

    def _require_node(self) -> RaftNode:
        if self._node is None:
            raise StorageError("the replica is not started")
        return self._node

    def _require_sm(self) -> LmdbStateMachine:
        if self._sm is None:
            raise StorageError("the replica is not started")
        return self._sm

    def _require_leadership(self) -> Leadership:
        if self._leadership is None:
            raise StorageError("the replica is not started")
        return self._leadership

    def _require_membership(self) -> MembershipOps:
        if self._membership is None:
            raise StorageError("the replica is not started")
        return self._membership


def _check_dump(dump: Path) -> None:
    """An empty dump is the trace of a first snapshot cut short by a crash (the log was
    not compacted): drop it. Any other unreadable dump is damage."""
    if not dump.exists():
        return
    if dump.stat().st_size == 0:
        logger.warning("removing empty snapshot %s (first snapshot interrupted)", dump)
        dump.unlink()
        return
    try:
        read_header(dump)
    except CorruptDataError as exc:
        raise CorruptDataError(
            f"{exc}. The Raft log before it was compacted away; to resync this replica "
            f"from the others, stop it and remove {dump.parent} (keep lmdb/)"
        ) from exc
