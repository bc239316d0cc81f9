"""The cluster as `gcs-ha status` and the replicas' status page show it: every member's
answer to the admin Status call, combined into one view (leader, lag, health). Pure: no
calls are made here (cluster_ops.py asks the replicas for the CLI, server/cluster_status.py
for the status page).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from gcs_ha.proto import admin_pb2

# `gcs-ha status` exit codes (1 and 2 are the CLI's: unreachable address, bad input).
HEALTHY, NO_LEADER, DEGRADED = 0, 3, 4


@dataclass(frozen=True)
class MemberView:
    """One member as `gcs-ha status` shows it; numbers are None when it did not answer."""

    id: str
    role: str | None
    term: int | None
    commit_index: int | None
    applied_index: int | None
    lag: int | None
    gcs_address: str
    raft_address: str
    serving: bool | None
    reachable: bool
    entry_version: int | None = None  # the newest log entry format it reads


@dataclass(frozen=True)
class ClusterView:
    """The cluster as seen from every member that answered. `cluster_version`: the log
    entry format the leader writes (consensus/versions.py), None without a leader's answer."""

    leader: str | None
    members: list[MemberView]
    cluster_version: int | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "leader": self.leader,
            "cluster_version": self.cluster_version,
            "members": [asdict(m) for m in self.members],
        }

    def leader_gcs_address(self) -> str | None:
        return next((m.gcs_address for m in self.members if m.id == self.leader), None)

    def health(self) -> int:
        """`gcs-ha status`'s exit code: HEALTHY (a leader serves and answered, every member
        answered), DEGRADED (a leader serves; some member did not answer) or NO_LEADER."""
        if not any(m.serving for m in self.members):
            return NO_LEADER
        return HEALTHY if all(m.reachable for m in self.members) else DEGRADED

    def leader_reachable(self) -> bool:
        """Whether the leader answered itself (else `leader` is what followers believe)."""
        return any(m.id == self.leader and m.role == "leader" for m in self.members)


def combine_answers(
    members: list[admin_pb2.Member], answers: list[admin_pb2.ReplicaStatus | None]
) -> ClusterView:
    """Combine the answers (None: that member did not answer), one per member, into the
    view: the leader is the highest-term member that says it leads. Also used by the
    replicas' status page (gcs_ha/server/cluster_status.py)."""
    statuses = [s for s in answers if s is not None]
    leaders = sorted((s for s in statuses if s.role == "leader"), key=lambda s: s.term)
    version = None
    if leaders:
        leader: str | None = leaders[-1].node_id
        leader_commit: int | None = leaders[-1].commit_index
        version = _format(leaders[-1].cluster_version)
    else:
        newest = max(statuses, key=lambda s: s.term, default=None)
        leader = (newest.leader_node_id or None) if newest else None
        leader_commit = None
    views = [_member_view(m, s, leader_commit) for m, s in zip(members, answers, strict=True)]
    return ClusterView(leader, views, version)


def _format(version: int) -> int:
    """An entry format from the wire; 0 (a build that did not say) reads and writes 1."""
    return max(1, version)


def _member_view(
    member: admin_pb2.Member, status: admin_pb2.ReplicaStatus | None, leader_commit: int | None
) -> MemberView:
    """One row of the status table; lag = leader commit index - this member's applied index."""
    if status is None:
        return MemberView(
            id=member.node_id,
            role=None,
            term=None,
            commit_index=None,
            applied_index=None,
            lag=None,
            gcs_address=member.gcs_address,
            raft_address=member.raft_address,
            serving=None,
            reachable=False,
        )
    return MemberView(
        id=member.node_id,
        role=status.role,
        term=status.term,
        commit_index=status.commit_index,
        applied_index=status.applied_index,
        lag=None if leader_commit is None else max(0, leader_commit - status.applied_index),
        gcs_address=member.gcs_address or status.gcs_address,
        raft_address=member.raft_address,
        serving=status.serving,
        reachable=True,
        entry_version=_format(status.entry_version),
    )
