"""What the consensus layer offers to the server and the CLI.

The server and CLI see a `Replica`: start/stop, a `StoreClient` whose writes are
replicated, status, membership changes, and leadership events. They never see
pysyncobj or LMDB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from gcs_ha.storage.store_client import StoreClient

ROLE_LEADER = "leader"
ROLE_FOLLOWER = "follower"
ROLE_CANDIDATE = "candidate"


@dataclass(frozen=True)
class MemberInfo:
    """A member of the cluster. gcs_address is empty until the member registered it;
    entry_version is the newest log entry format it registered that it reads (1, the
    first format, when it did not say: consensus/versions.py)."""

    node_id: str
    raft_address: str
    gcs_address: str = ""
    entry_version: int = 1


@dataclass(frozen=True)
class ReplicaStatusInfo:
    """One replica's view of itself and of the cluster."""

    node_id: str
    role: str
    term: int
    commit_index: int
    applied_index: int
    leader_node_id: str | None
    leader_raft_address: str | None
    raft_address: str
    gcs_address: str
    serving: bool
    log_length: int
    last_log_index: int
    has_quorum: bool
    cluster_name: str
    members: tuple[MemberInfo, ...] = ()
    # Leader only: raft address of each follower -> its match index.
    match_index: dict[str, int] = field(default_factory=dict)
    # Seconds since the consensus process last reported (it does every 50 ms when well).
    status_age_s: float = 0.0
    # The newest log entry format this replica reads, and the cluster version: the format
    # the leader writes, the newest every member reads (consensus/versions.py).
    entry_version: int = 1
    cluster_version: int = 1


@dataclass(frozen=True)
class StoreUse:
    """This replica's store, measured now: LMDB's pages in use and its map size, the
    data file's allocated bytes, free bytes on the data dir's disk, and the writes the
    capacity guard refused so far (StoreFullError)."""

    map_used: int
    map_size: int
    data_file: int
    disk_free: int
    writes_refused: int


@dataclass(frozen=True)
class ProposalCounts:
    """The front end's proposals so far: requests proposed (in `entries`: one log entry
    carries a batch), requests that failed (not leader, lost leadership, refused...), and
    requests waiting (queued or in flight)."""

    requests: int
    entries: int
    failed: int
    pending: int


class LeadershipListener(Protocol):
    """Leadership events, delivered on the replica's asyncio loop, in order."""

    def on_serving(self, term: int) -> None:
        """This replica leads `term` and has applied everything committed before it."""
        ...

    def on_demoted(self) -> None:
        """This replica stopped serving (lost leadership, or is shutting down)."""
        ...


class Replica(Protocol):
    """One running replica. Errors: gcs_ha.errors (DataDirError, CorruptDataError at start;
    NotLeaderError with a leader hint for leader-only calls on a follower;
    UnavailableError on a timeout)."""

    @property
    def store(self) -> StoreClient: ...

    def store_without_read_barrier(self) -> StoreClient:
        """`store` sharing its writes, with reads from local state at once (no read
        barrier): for the serving leader's managers, whose promotion barrier already
        applied everything committed before (server/DESIGN.md says why that is safe)."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> ReplicaStatusInfo: ...

    def members(self) -> list[MemberInfo]: ...

    def add_listener(self, listener: LeadershipListener) -> None: ...

    async def wait_serving(self, timeout: float) -> bool:
        """True once this replica serves (is the leader with its barrier applied)."""
        ...

    async def add_member(self, member: MemberInfo, timeout: float = 10.0) -> None:
        """Add `member` (leader only). ConfigError when its node id or an address clashes
        with another member's; UnavailableError while another change runs."""
        ...

    async def remove_member(
        self, node_id: str | None, raft_address: str | None = None, timeout: float = 10.0
    ) -> None:
        """Remove the member named by node id or Raft address (at least one; both must
        agree). ConfigError if there is none, or it is this replica (the leader)."""
        ...

    async def transfer_leadership(self, node_id: str | None, timeout: float = 10.0) -> str:
        """Hand leadership to `node_id` (None: a caught-up follower) once its log matches
        this leader's, holding new writes meanwhile; returns the node id it went to.
        NotLeaderError on a follower, ConfigError for an unknown node id, UnavailableError
        when no follower caught up in time or this replica won the election again."""
        ...

    def digest(self) -> tuple[int, str]:
        """(applied index, sha256 hex of every table at that index) from local state."""
        ...

    async def compact(self) -> int:
        """Snapshot now; returns the Raft index the snapshot covers."""
        ...

    def store_use(self) -> StoreUse:
        """The store's size and room (capacity.py measures it; at most REFRESH_S old)."""
        ...

    def proposal_counts(self) -> ProposalCounts: ...

    async def consensus_metrics(self) -> bytes:
        """The consensus layer's own metrics, in Prometheus's text format
        (UnavailableError when it cannot answer)."""
        ...

    async def backup_image(self, out: Path) -> int:
        """Write an LMDB image of the tables to `out` (serving leader only; NotLeaderError
        with a hint elsewhere), holding every write acknowledged before the call; returns
        the Raft index it holds."""
        ...
