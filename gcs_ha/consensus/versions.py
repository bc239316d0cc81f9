"""The cluster version: the newest log entry format every member reads.

The leader writes every entry in the lowest `entry_version` registered over the current
Raft membership (a member that has not registered, or whose build did not say, counts as
BASE_VERSION), so during a rolling upgrade no replica meets an entry it cannot read.
Decisions, and why downgrades are not supported: DESIGN.md, "Entry formats and the
cluster version".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gcs_ha.consensus.api import MemberInfo
from gcs_ha.consensus.envelope import BASE_VERSION


def cluster_version(
    own_version: int, peers: Iterable[str], registered: Mapping[str, MemberInfo]
) -> int:
    """The lowest entry format read by this replica (`own_version`) and by the members at
    the Raft addresses `peers`, as registered (node id -> MemberInfo); BASE_VERSION for a
    peer that has not registered."""
    by_raft = {m.raft_address: max(BASE_VERSION, m.entry_version) for m in registered.values()}
    return min([own_version, *(by_raft.get(address, BASE_VERSION) for address in peers)])
