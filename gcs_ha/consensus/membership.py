"""Membership: the members table, Raft membership changes, leadership transfer, compaction.

Raft knows members by Raft address; operators and Ray know them by node id and GCS
address. Each replica registers itself (node id -> raft and GCS addresses) in the
replicated members table once a leader is known; the entry is proposed from wherever
the replica is and pysyncobj forwards it to the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from gcs_ha.consensus import envelope
from gcs_ha.consensus.api import MemberInfo
from gcs_ha.consensus.member_rules import check_add, resolve_removal
from gcs_ha.consensus.proposer import GroupCommitProposer
from gcs_ha.consensus.raft_link import RaftLink
from gcs_ha.errors import ConfigError, GcsHaError, NotLeaderError, UnavailableError
from gcs_ha.futures import cancel_and_wait, settle
from gcs_ha.storage.store_client import MEMBERS_TABLE, StoreClient

logger = logging.getLogger(__name__)

REGISTER_RETRY_S = 0.5
COMPACTION_TIMEOUT_S = 120.0


def member_record(member: MemberInfo) -> bytes:
    """The members-table record of `member` (replica.member_from_record reads it)."""
    doc = {
        "raft_address": member.raft_address,
        "gcs_address": member.gcs_address,
        "entry_version": member.entry_version,
    }
    return json.dumps(doc, sort_keys=True).encode()


@dataclass(frozen=True)
class MembershipDeps:
    """What membership needs of its replica."""

    store: StoreClient  # the replicated store: members-table writes
    proposer: GroupCommitProposer  # held during a transfer
    registered: Callable[[], dict[str, MemberInfo]]  # node id -> member, from the table
    me: Callable[[], MemberInfo]  # this replica as it registers itself
    is_serving: Callable[[], bool]
    leader_hint: Callable[[], str]  # the leader's GCS address ("" when unknown)


class MembershipOps:
    """Leader-side membership operations and self-registration. Loop thread only."""

    def __init__(self, deps: MembershipDeps, node: RaftLink) -> None:
        self._deps = deps
        self._node = node
        self._register_task: asyncio.Task[None] | None = None
        self._changing = False

    def start_registration(self) -> None:
        self._register_task = asyncio.get_running_loop().create_task(self._register_self())

    async def stop(self) -> None:
        task, self._register_task = self._register_task, None
        if task is not None:
            await cancel_and_wait(task)

    async def add(self, member: MemberInfo, timeout: float) -> None:
        """Add `member` to the Raft configuration and register it (a no-op if it already
        is one with the same addresses; ConfigError on a clash, member_rules)."""
        self._require_serving()
        registered = self._deps.registered()
        check_add(member, registered, self._me())
        with self._one_change():
            if member.raft_address in self._node.status.peers:
                logger.info("member %s is already in the cluster", member.raft_address)
            else:
                # Snapshot first: the new member then catches up from the snapshot and the
                # few entries after it, not by replaying the whole log.
                index = await self.compact()
                logger.info("adding %s (snapshot at %d)", member.raft_address, index)
                await self._call(
                    lambda done: self._node.add_node(member.raft_address, done), timeout
                )
            mine = registered.get(member.node_id)
            if mine is None or (member.gcs_address and mine.gcs_address != member.gcs_address):
                # (A member that registered itself keeps its record: its entry format.)
                record = member_record(member)
                await self._deps.store.put(MEMBERS_TABLE, member.node_id.encode(), record)

    async def remove(self, node_id: str | None, raft_address: str | None, timeout: float) -> None:
        """Remove a member named by node id or Raft address (member_rules.resolve_removal).
        A dead member can be removed: the rest only needs a majority of the rest."""
        self._require_serving()
        removal = resolve_removal(
            node_id,
            raft_address,
            self._deps.registered(),
            self._node.status.peers,
            self._me(),
        )
        with self._one_change():
            if removal.in_raft:
                await self._call(
                    lambda done: self._node.remove_node(removal.raft_address, done), timeout
                )
            if removal.node_id is not None:
                await self._deps.store.delete(MEMBERS_TABLE, removal.node_id.encode())

    @contextlib.contextmanager
    def _one_change(self) -> Iterator[None]:
        """One membership change at a time from this leader (Raft's own guard, the
        ``one_config_change`` patch, covers changes still uncommitted from a previous
        leader). UnavailableError, which clients retry, while another one runs."""
        if self._changing:
            logger.info("membership change refused: another one is in progress")
            raise UnavailableError("another membership change is in progress; retry")
        self._changing = True
        try:
            yield
        finally:
            self._changing = False

    def _me(self) -> MemberInfo:
        return self._deps.me()

    async def transfer(self, node_id: str | None, timeout: float) -> str:
        """Hand leadership to `node_id` (None: the most caught-up connected follower);
        returns the node id (or, unregistered, the Raft address) of the one it went to.

        pysyncobj only hands over to a follower whose log matches the leader's exactly,
        and the old leader wins the election again if it appended meanwhile. So new
        proposals are held (queued) until a follower has caught up and the election it
        starts is over; then they go to whoever leads."""
        self._require_serving()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        start_term = self._node.term()
        proposer = self._deps.proposer
        proposer.hold()
        try:
            address = await self._hand_over(node_id, deadline)
            # Done when this replica stepped down. pysyncobj sets the new term before the
            # new role, so "leader in start_term + 1" is a moment, not an outcome; leading
            # again in a later term means this replica won the next election.
            while self._node.is_leader():
                if self._node.term() >= start_term + 2:
                    raise UnavailableError("the transfer's election was won by this replica again")
                if loop.time() > deadline:
                    raise UnavailableError("leadership transfer did not complete in time")
                await asyncio.sleep(0.005)
        finally:
            proposer.release()
        by_raft = {m.raft_address: m.node_id for m in self._deps.registered().values()}
        return by_raft.get(address, address)

    async def _hand_over(self, node_id: str | None, deadline: float) -> str:
        """Send the hand-over to a caught-up follower (returns its Raft address);
        pysyncobj re-checks the match at call time and denies it if the follower fell
        behind meanwhile: try again."""
        loop = asyncio.get_running_loop()
        while True:
            address = await self._caught_up_target(node_id, deadline)
            try:
                await self._call(
                    functools.partial(self._node.transfer_leadership, address),
                    max(0.1, deadline - loop.time()),
                )
                return address
            except UnavailableError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.02)

    async def _caught_up_target(self, node_id: str | None, deadline: float) -> str:
        """The Raft address of the target once its log matches the leader's."""
        wanted = None
        if node_id is not None:
            member = self._deps.registered().get(node_id)
            if member is None:
                raise ConfigError(f"no member with node id {node_id!r}")
            wanted = member.raft_address
        loop = asyncio.get_running_loop()
        while self._deps.proposer.inflight:  # the last entries reach the log first
            if loop.time() > deadline:
                raise UnavailableError("entries in flight did not complete for the transfer")
            await asyncio.sleep(0.005)
        quiet_since = time.monotonic()
        while True:
            status = self._node.status  # copied in the Raft thread; use one taken after now
            candidates = [wanted] if wanted else sorted(status.connected)
            for address in candidates:
                if (
                    status.taken_at > quiet_since
                    and address in status.connected
                    and status.match_index.get(address, -1) == status.last_log_index
                ):
                    return address
            if status.taken_at > quiet_since and not status.has_quorum:
                # No majority connected (e.g. every follower is stopping too): no target
                # could win an election now; say so at once instead of at the deadline.
                raise UnavailableError("no quorum of connected followers to transfer to")
            if loop.time() > deadline:
                raise UnavailableError(f"no follower caught up to transfer to ({wanted or 'any'})")
            await asyncio.sleep(0.01)

    async def compact(self) -> int:
        """Take a snapshot now and compact the log; returns the snapshot's Raft index."""
        index: int = await self._call(self._node.compact, COMPACTION_TIMEOUT_S)
        return index

    async def _register_self(self) -> None:
        """Keep this replica's record (addresses, entry format) in the members table; it
        is written in the first entry format, which every member reads."""
        me = self._deps.me()
        record = member_record(me)
        while True:
            current = self._deps.registered().get(me.node_id)
            if current == me:
                await asyncio.sleep(REGISTER_RETRY_S * 10)
                continue
            if self._node.status.leader is not None:
                try:
                    data = envelope.encode(
                        [envelope.put(MEMBERS_TABLE, me.node_id.encode(), record, True)]
                    )
                    await self._call(functools.partial(self._node.propose, data), 5.0)
                    logger.info(
                        "registered %s in the members table (reads entry formats up to %d)",
                        me.node_id,
                        me.entry_version,
                    )
                    continue
                except GcsHaError as exc:
                    logger.debug("member registration not done yet: %s", exc)
            await asyncio.sleep(REGISTER_RETRY_S)

    def _require_serving(self) -> None:
        if not self._deps.is_serving():
            raise NotLeaderError(
                "membership changes go to the leader", self._deps.leader_hint() or None
            )

    async def _call(self, start: Any, timeout: float) -> Any:
        """Run a callback-style Raft call and await its completion on the loop."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(result: Any, error: GcsHaError | None) -> None:
            settle(future, result, error)

        start(done)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise UnavailableError("the Raft operation timed out") from exc
