"""The cluster version: the newest log entry format every member reads.

Each replica registers, with its addresses, the newest entry format it reads
(`envelope.newest_version()`, `MemberInfo.entry_version`). The leader writes every entry
in the cluster version: the lowest of those over the current Raft membership. A member
that has not registered yet, or registered with a build that did not say (before the
gate existed), counts as BASE_VERSION. So during a rolling upgrade the leader keeps
writing the old format until the last old replica has been replaced and has registered
again, and no replica ever meets an entry it cannot read. The version may also go down
(a member of an older build joins): writing an older format is always safe.

Not covered: a replica replaced by an older build than the cluster version (a
downgrade). Its registration still says the newer format until it registers again, and
entries already in the log are in that format: it stops at the first one (exit 70,
"a newer gcs-ha wrote it; upgrade this replica"). Downgrades are not supported.
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
