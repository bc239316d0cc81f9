"""Membership rules: a member cannot take another's node id or addresses; retries are
no-ops; removal by node id or by Raft address (an interrupted join)."""

from __future__ import annotations

import pytest

from gcs_ha.cluster_ops import check_join
from gcs_ha.consensus.api import MemberInfo
from gcs_ha.consensus.member_rules import Removal, check_add, resolve_removal
from gcs_ha.errors import ConfigError
from gcs_ha.proto import admin_pb2

LEADER = MemberInfo("r0", "h0:7000", "h0:6379")
R1 = MemberInfo("r1", "h1:7000", "h1:6379")
R2 = MemberInfo("r2", "h2:7000", "h2:6379")
REGISTERED = {m.node_id: m for m in (LEADER, R1, R2)}
PEERS = {"h1:7000", "h2:7000", "h9:7000"}  # h9: added to Raft, never registered


def test_a_new_member_with_addresses_of_its_own_is_accepted() -> None:
    check_add(MemberInfo("r3", "h3:7000", "h3:6379"), REGISTERED, LEADER)
    check_add(MemberInfo("r3", "h3:7000", ""), REGISTERED, LEADER)


def test_adding_a_member_again_with_the_same_addresses_is_a_no_op() -> None:
    check_add(R1, REGISTERED, LEADER)
    check_add(MemberInfo("r1", "h1:7000", ""), REGISTERED, LEADER)


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (MemberInfo("r3", "h1:7000", "h3:6379"), "Raft address h1:7000 belongs to r1"),
        (MemberInfo("r3", "h3:7000", "h2:6379"), "gRPC address h2:6379 belongs to r2"),
        (MemberInfo("r1", "h3:7000", "h1:6379"), "r1 is already a member at Raft h1:7000"),
        (MemberInfo("r1", "h1:7000", "h3:6379"), "r1 is already a member"),
        (MemberInfo("r3", "h0:7000", "h3:6379"), "the leader"),
        (MemberInfo("r0", "h3:7000", "h3:6379"), "the leader"),
        (MemberInfo("r3", "h3:7000", "h0:6379"), "is the leader's"),
    ],
)
def test_a_member_cannot_take_what_another_holds(member: MemberInfo, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_add(member, REGISTERED, LEADER)


def test_removal_by_node_id_by_raft_address_or_both() -> None:
    assert resolve_removal("r1", None, REGISTERED, PEERS, LEADER) == Removal("h1:7000", "r1", True)
    assert resolve_removal(None, "h2:7000", REGISTERED, PEERS, LEADER) == Removal(
        "h2:7000", "r2", True
    )
    assert resolve_removal("r2", "h2:7000", REGISTERED, PEERS, LEADER).node_id == "r2"
    # An interrupted join: in Raft, never registered.
    assert resolve_removal(None, "h9:7000", REGISTERED, PEERS, LEADER) == Removal(
        "h9:7000", None, True
    )
    # Registered but already out of Raft (a removal interrupted before its record went).
    gone = {**REGISTERED, "r5": MemberInfo("r5", "h5:7000", "h5:6379")}
    assert resolve_removal("r5", None, gone, PEERS, LEADER) == Removal("h5:7000", "r5", False)


@pytest.mark.parametrize(
    ("node_id", "raft_address", "message"),
    [
        (None, None, "a node id or a Raft address"),
        ("r7", None, r"no member with node id 'r7' \(members: r0, r1, r2\)"),
        (None, "h7:7000", "no member with Raft address h7:7000"),
        ("r1", "h2:7000", "r1 has Raft address h1:7000, not h2:7000"),
        ("r0", None, "r0 is the leader: transfer leadership"),
        (None, "h0:7000", "r0 is the leader"),
    ],
)
def test_removal_refusals_name_the_problem(
    node_id: str | None, raft_address: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_removal(node_id, raft_address, REGISTERED, PEERS, LEADER)


def status_with(*members: admin_pb2.Member) -> admin_pb2.ReplicaStatus:
    return admin_pb2.ReplicaStatus(members=list(members))


def test_join_again_after_an_interrupted_join_completes_it() -> None:
    """A member with our Raft address and no name is our own join, cut short."""
    status = status_with(
        admin_pb2.Member(node_id="r0", raft_address="h0:7000", gcs_address="h0:6379"),
        admin_pb2.Member(node_id="", raft_address="h3:7000", gcs_address=""),
    )
    assert check_join(status, "r3", "h3:7000", "h3:6379") is False
    assert check_join(status, "r0", "h0:7000", "h0:6379") is True
    with pytest.raises(ConfigError, match="Raft address h0:7000 is used by member r0"):
        check_join(status, "r3", "h0:7000", "h3:6379")
    with pytest.raises(ConfigError, match="gRPC address h0:6379 is used by member r0"):
        check_join(status, "r3", "h3:7000", "h0:6379")
