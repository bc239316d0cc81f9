"""The rules a membership change must pass before the leader proposes it.

Pure functions over the leader's view: the members table (node id -> addresses), the Raft
configuration (peer Raft addresses) and the leader itself. A member cannot take a node
id, a Raft address or a gRPC address that another member holds; a change that is already
done is allowed again (a retried join or leave is a no-op, not an error).

Errors: ConfigError (INVALID_ARGUMENT on the wire) naming the clash, for a request that
contradicts the cluster.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from gcs_ha.consensus.api import MemberInfo
from gcs_ha.errors import ConfigError


@dataclass(frozen=True)
class Removal:
    """What removing a member means: its Raft address, and its node id if it registered."""

    raft_address: str
    node_id: str | None
    in_raft: bool


def check_add(
    member: MemberInfo, registered: Mapping[str, MemberInfo], leader: MemberInfo
) -> None:
    """ConfigError unless `member` may be added (or is already, with the same addresses)."""
    if member.node_id == leader.node_id or member.raft_address == leader.raft_address:
        raise ConfigError(f"{leader.node_id} (the leader) already has that node id or address")
    if member.gcs_address and member.gcs_address == leader.gcs_address:
        raise ConfigError(f"gRPC address {member.gcs_address} is the leader's ({leader.node_id})")
    mine = registered.get(member.node_id)
    if mine is not None:
        _same_member(member, mine)
    for other in registered.values():
        if other.node_id == member.node_id:
            continue
        if other.raft_address == member.raft_address:
            raise ConfigError(f"Raft address {member.raft_address} belongs to {other.node_id}")
        if member.gcs_address and other.gcs_address == member.gcs_address:
            raise ConfigError(f"gRPC address {member.gcs_address} belongs to {other.node_id}")


def _same_member(member: MemberInfo, mine: MemberInfo) -> None:
    moved = mine.raft_address != member.raft_address or (
        member.gcs_address and mine.gcs_address and mine.gcs_address != member.gcs_address
    )
    if moved:
        raise ConfigError(
            f"{member.node_id} is already a member at Raft {mine.raft_address}, gRPC "
            f"{mine.gcs_address or '?'}; remove it first (gcs-ha leave) or use another node id"
        )


def resolve_removal(
    node_id: str | None,
    raft_address: str | None,
    registered: Mapping[str, MemberInfo],
    peers: Collection[str],
    leader: MemberInfo,
) -> Removal:
    """The member to remove, named by node id, by Raft address (a member that never
    registered, e.g. an interrupted join), or both (they must agree)."""
    if not node_id and not raft_address:
        raise ConfigError("name the member to remove: a node id or a Raft address")
    if node_id:
        member = registered.get(node_id)
        if member is None and node_id != leader.node_id:
            known = ", ".join(sorted(registered)) or "none"
            raise ConfigError(f"no member with node id {node_id!r} (members: {known})")
        address = leader.raft_address if member is None else member.raft_address
        if raft_address and raft_address != address:
            raise ConfigError(f"{node_id} has Raft address {address}, not {raft_address}")
    else:
        address = str(raft_address)
        node_id = next((m.node_id for m in registered.values() if m.raft_address == address), None)
        if address not in peers and node_id is None and address != leader.raft_address:
            raise ConfigError(f"no member with Raft address {address}")
    if address == leader.raft_address:
        raise ConfigError(
            f"{leader.node_id} is the leader: transfer leadership before removing it"
        )
    return Removal(address, node_id, address in peers)
