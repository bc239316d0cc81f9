"""The Raft node of a replica's consensus process: pysyncobj's SyncObj, ticked by hand.

The consensus process has one thread, and it runs Raft: SyncObj is built with autoTick
off and `tick()` does one round (timers, commit, apply, append and send, then one poll of
every socket, the front end's included). The poll waits for the tick period, or not at
all when a lone leader has appended an entry that it alone commits: nothing else would
wake it (a replica with peers is woken by their acks).

Callbacks given to `propose`, `add_node`, ... run in this thread as `(result, reason)`,
reason a pysyncobj FAIL_REASON code (ipc.Reason has the same values).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from gcs_ha.consensus import _pysyncobj as ps
from gcs_ha.consensus.ipc import RaftStatus
from gcs_ha.consensus.state_machine import LmdbStateMachine
from gcs_ha.errors import ConfigError
from gcs_ha.proto import raft_log_pb2 as pb

logger = logging.getLogger(__name__)

Callback = Callable[[Any, int], None]
BIND_WAIT_S = 2.0


class _GcsSyncObj(ps.SyncObj):  # type: ignore[misc]
    """SyncObj with one replicated method. Keep it free of properties: pysyncobj's
    constructor inspects every attribute."""

    def __init__(
        self, self_address: str, peers: list[str], conf: Any, sm: LmdbStateMachine, **kw: Any
    ):
        self._gcs_sm = sm
        super().__init__(self_address, peers, conf, **kw)

    @ps.replicated  # type: ignore[untyped-decorator]
    def apply_entry(self, data: bytes) -> list[pb.Result] | None:
        return self._gcs_sm.apply(self.raftLastApplied + 1, data)


class RaftNode:
    """Owns one SyncObj (autoTick off). Everything here runs in the consensus thread."""

    def __init__(
        self,
        sm: LmdbStateMachine,
        self_address: str,
        peers: list[str],
        conf: Any,
        *,
        transport_class: Callable[..., Any] | None = None,
    ) -> None:
        """Binds the Raft port now; ConfigError when it cannot be bound.
        `transport_class` (tests): pysyncobj's transport factory instead of TCP, e.g. the
        in-memory network of gcs_ha/testing/raft_sim.py; then no port is bound."""
        if conf.autoTick:
            raise ConfigError("RaftNode ticks SyncObj itself: build the conf with autoTick off")
        kw: dict[str, Any] = {}
        if transport_class is None:
            _check_bindable(conf.bindAddress)
        else:
            kw["transportClass"] = transport_class
        self._self_address = self_address
        self._tick_s = float(conf.autoTickPeriod)
        try:
            self._obj = _GcsSyncObj(self_address, peers, conf, sm, **kw)
        except ps.SyncObjException as exc:
            raise ConfigError(f"cannot bind the Raft port {conf.bindAddress}: {exc}") from exc

    @property
    def sync_obj(self) -> Any:
        """The SyncObj itself (for the patch layer's read tags)."""
        return self._obj

    @property
    def poller(self) -> Any:
        """pysyncobj's poller: subscribe other descriptors to be served in `tick()`."""
        return self._obj._poller

    def add_tick_callback(self, callback: Callable[[], None]) -> None:
        """Run `callback` once per tick, after the Raft work and before the poll."""
        self._obj.addOnTickCallback(callback)

    def tick(self) -> None:
        """One round of Raft work and one poll (see the module docstring)."""
        self._obj.doTick(0.0 if self._lone_leader_behind() else self._tick_s)

    def stop(self) -> None:
        """Close the Raft sockets and the journal."""
        self._obj.destroy()

    # -- requests ---------------------------------------------------------------------

    def propose(self, data: bytes, callback: Callback) -> None:
        """Append `data` as a log entry (a follower forwards it to the leader)."""
        self._obj.apply_entry(data, callback=callback)

    def add_node(self, address: str, callback: Callback) -> None:
        self._obj.addNodeToCluster(address, callback=callback)

    def remove_node(self, address: str, callback: Callback) -> None:
        self._obj.removeNodeFromCluster(address, callback=callback)

    def transfer_leadership(self, address: str | None, callback: Callback) -> None:
        self._obj.transferLeadership(address, callback=callback)

    def force_compaction(self) -> None:
        self._obj.forceLogCompaction()

    def request_heartbeat(self) -> None:
        """A leader sends AppendEntries to every follower at the next tick."""
        self._obj._SyncObj__newAppendEntriesTime = 0

    # -- state ------------------------------------------------------------------------

    def is_leader(self) -> bool:
        return bool(self._obj._isLeader())

    def term(self) -> int:
        return int(self._obj.raftCurrentTerm)

    def commit_index(self) -> int:
        return int(self._obj.raftCommitIndex)

    def last_applied(self) -> int:
        return int(self._obj.raftLastApplied)

    def first_index_of_term(self) -> int:
        """On a leader: the index of the no-op that opened its term."""
        return int(self._obj._SyncObj__noopIDx or 0)

    def voters(self) -> list[str]:
        """Node ids of the other voting members."""
        return [str(node.id) for node in self._obj.otherNodes]

    def status(self) -> RaftStatus:
        """A snapshot of the node's state."""
        obj = self._obj
        raw = obj.getStatus()
        leader = raw.get("leader")
        match = {
            key[len("match_idx_server_") :]: int(value)
            for key, value in raw.items()
            if key.startswith("match_idx_server_")
        }
        connected = frozenset(
            key[len("partner_node_status_server_") :]
            for key, value in raw.items()
            if key.startswith("partner_node_status_server_") and value == 2
        )
        return RaftStatus(
            state=int(raw["state"]),
            term=int(raw["raft_term"]),
            leader=None if leader is None else str(leader.id),
            commit_index=int(raw["commit_idx"]),
            last_applied=int(raw["last_applied"]),
            log_length=int(raw["log_len"]),
            last_log_index=int(obj._SyncObj__raftLog[-1][1]),
            has_quorum=bool(raw["has_quorum"]),
            self_address=self._self_address,
            peers=tuple(sorted(str(n.id) for n in obj.otherNodes)),
            match_index=match if int(raw["state"]) == ps.RAFT_LEADER else {},
            connected=connected,
            taken_at=time.monotonic(),
        )

    def _lone_leader_behind(self) -> bool:
        obj = self._obj
        if not obj._isLeader() or obj.otherNodes:
            return False
        return int(obj._SyncObj__raftLog[-1][1]) > int(obj.raftCommitIndex)


def _check_bindable(address: str, wait_s: float = BIND_WAIT_S) -> None:
    """ConfigError when the Raft address cannot be bound within `wait_s` (pysyncobj would
    retry forever). The wait covers this replica's previous consensus process, which the
    kernel kills when its front end dies, but not always before a restart binds."""
    host, _, port = address.rpartition(":")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + wait_s
    while True:
        probe = socket.socket(family, socket.SOCK_STREAM)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host.strip("[]"), int(port)))
            return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"cannot listen on --raft-address {address}: {exc.strerror}"
                ) from exc
        finally:
            probe.close()
        time.sleep(0.05)
