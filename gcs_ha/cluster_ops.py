"""Cluster-wide admin procedures behind `gcs-ha status`, `join` and `leave`.

They talk to replicas only through the admin service (gcs_ha.admin_client), so they
work from any machine that reaches the replicas' gRPC ports. Errors: UnavailableError
when the address given cannot be reached, ConfigError for a request that contradicts
the cluster (unknown member, node id or address already taken), and whatever the
leader answers (NotLeaderError after the deadline, InvalidRequestError, ...).
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

from gcs_ha.admin_client import AdminClient, call_on_leader, leader_address
from gcs_ha.cluster_view import ClusterView, combine_answers
from gcs_ha.errors import (
    ConfigError,
    GcsHaError,
    InvalidRequestError,
    NotLeaderError,
    UnavailableError,
    UnknownOutcomeError,
)
from gcs_ha.proto import admin_pb2

log = logging.getLogger(__name__)


def gather_status(address: str, timeout: float = 3.0) -> ClusterView:
    """Ask `address` for the members, then every member (in parallel) for its own status.

    The membership is the one `address` reports (by Raft address). A member it cannot
    name yet (not registered in its copy of the members table) is named from the other
    members' answers, and asked in a further round.
    """
    with AdminClient(address, timeout) as client:
        first = client.status()
    known = {m.raft_address: m for m in first.members}
    if not known:
        known[first.raft_address] = admin_pb2.Member(
            node_id=first.node_id, raft_address=first.raft_address, gcs_address=first.gcs_address
        )
    answers: dict[str, admin_pb2.ReplicaStatus | None] = {first.raft_address: first}
    with ThreadPoolExecutor(max_workers=min(8, len(known))) as pool:
        while to_ask := [m for r, m in known.items() if r not in answers and m.gcs_address]:
            statuses = pool.map(lambda m: _ask(m, timeout), to_ask)
            for member, status in zip(to_ask, statuses, strict=True):
                answers[member.raft_address] = status
                _fill_in(known, status)
    members = sorted(known.values(), key=lambda m: (not m.node_id, m.node_id, m.raft_address))
    return combine_answers(members, [answers.get(m.raft_address) for m in members])


def _ask(member: admin_pb2.Member, timeout: float) -> admin_pb2.ReplicaStatus | None:
    try:
        with AdminClient(member.gcs_address, timeout) as client:
            return client.status()
    except GcsHaError:
        return None


def _fill_in(known: dict[str, admin_pb2.Member], status: admin_pb2.ReplicaStatus | None) -> None:
    """Complete members known only by Raft address with what `status` says of them."""
    for member in status.members if status else ():
        mine = known.get(member.raft_address)
        if mine is not None and not mine.gcs_address and member.gcs_address:
            known[member.raft_address] = member


def discover(address: str, timeout: float = 5.0) -> admin_pb2.ReplicaStatus:
    """The status of the member at `address` (its members and cluster name), for join."""
    with AdminClient(address, timeout) as client:
        return client.status()


def check_join(
    status: admin_pb2.ReplicaStatus, node_id: str, raft_address: str, gcs_address: str
) -> bool:
    """Whether `node_id` is already a member (a restart); ConfigError on a clash.

    A member with our Raft address and no name is our own join, interrupted after Raft
    added it and before it registered: joining again completes it."""
    for member in status.members:
        if member.node_id == node_id:
            if member.raft_address != raft_address:
                raise ConfigError(
                    f"node {node_id} is already a member with Raft address "
                    f"{member.raft_address}, not {raft_address}; remove it first "
                    f"(gcs-ha leave) or use another node id"
                )
            return True
        if member.raft_address == raft_address and member.node_id:
            raise ConfigError(f"Raft address {raft_address} is used by member {member.node_id}")
        if gcs_address and member.gcs_address == gcs_address:
            raise ConfigError(f"gRPC address {gcs_address} is used by member {member.node_id}")
    return False


def add_self(
    address: str,
    node_id: str,
    raft_address: str,
    gcs_address: str,
    *,
    key: bytes | None,
    deadline_s: float = 60.0,
) -> None:
    """Ask the leader (found from `address`) to add this member; done if it already is one.
    `key`: the cluster's admin key (gcs_ha.admin_auth)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            call_on_leader(
                address,
                lambda c: c.add_member(node_id, raft_address, gcs_address),
                deadline_s=max(1.0, end - time.monotonic()),
                key=key,
            )
            return
        except GcsHaError as exc:
            # The add may have been applied although the call failed (unknown outcome).
            if _is_member(address, node_id):
                return
            retryable = isinstance(exc, UnavailableError | NotLeaderError | UnknownOutcomeError)
            if not retryable or time.monotonic() >= end:
                raise
            time.sleep(0.5)


def _is_member(address: str, node_id: str) -> bool:
    try:
        return any(m.node_id == node_id for m in discover(address, 3.0).members)
    except GcsHaError:
        return False


@dataclass(frozen=True)
class Removed:
    """What `leave` did: the member removed (node id, or None if it never registered;
    Raft address), whether it took the shutdown request, and why not."""

    node_id: str | None
    raft_address: str
    shut_down: bool
    note: str = ""

    def __str__(self) -> str:
        name = self.node_id or self.raft_address
        return f"removed {name}" + (" and shut it down" if self.shut_down else f"; {self.note}")

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "message": str(self)}


def leave(
    address: str,
    node_id: str | None,
    key: bytes | None,
    deadline_s: float = 30.0,
    *,
    raft_address: str | None = None,
) -> Removed:
    """Remove a member and shut it down; returns what was done.

    The member is named by node id, or by Raft address (one that never registered, e.g.
    an interrupted join). It may be dead: the others remove it if they are a majority of
    the rest. Transfers leadership away first when it leads (a leader cannot remove
    itself). `key`: the cluster's admin key (gcs_ha.admin_auth).
    """
    status, member = _find_member(address, node_id, raft_address, deadline_s)
    name = member.node_id or member.raft_address
    others = [
        m.gcs_address
        for m in status.members
        if m.raft_address != member.raft_address and m.gcs_address
    ]
    if not others:
        raise ConfigError(f"{name} is the only member; it cannot leave its own cluster")
    # Talk to the cluster through the address given (it answered) unless it is the leaving one.
    via = address if address != member.gcs_address else others[0]
    for attempt in range(3):
        if member.node_id and _leader_id(via) == member.node_id:
            _move_leadership(member.gcs_address or address, member.node_id, via, deadline_s, key)
        try:
            call_on_leader(
                via,
                lambda c: c.remove_member(member.node_id, member.raft_address),
                deadline_s=deadline_s,
                key=key,
            )
            break
        except InvalidRequestError:
            # Refused as the leader: it became leader again (an election since) or the
            # member we asked did not know the leader yet. Move leadership and retry.
            if attempt == 2 or not member.node_id or _leader_id(via) != member.node_id:
                raise
    report = Removed(member.node_id or None, member.raft_address, shut_down=False)
    if not member.gcs_address:
        note = "it never registered a gRPC address: stop it yourself if it runs"
        return replace(report, note=note)
    try:
        with AdminClient(member.gcs_address, 5.0, key) as client:
            client.shutdown()
    except GcsHaError as exc:
        note = f"it did not take the shutdown request ({exc}): stop it yourself"
        return replace(report, note=note)
    return replace(report, shut_down=True)


def _find_member(
    address: str, node_id: str | None, raft_address: str | None, deadline_s: float
) -> tuple[admin_pb2.ReplicaStatus, admin_pb2.Member]:
    """The status of `address` and the member named, waiting while that replica's copy of
    the members table is still incomplete (a member it knows only by Raft address: a
    replica that just joined, catching up); ConfigError when the member is not there."""
    end = time.monotonic() + deadline_s
    while True:
        status = discover(address)
        try:
            return status, _member_named(status, node_id, raft_address)
        except ConfigError:
            incomplete = any(not m.node_id for m in status.members)
            if not incomplete or time.monotonic() >= end:
                raise
        time.sleep(0.2)


def _leader_id(address: str) -> str | None:
    """The node id of the leader, as the leader itself says when it can be asked."""
    status = discover(address)
    if status.role == "leader":
        return status.node_id
    target = leader_address(status)
    if target:
        with contextlib.suppress(GcsHaError):
            leader = discover(target, 3.0)
            if leader.role == "leader":
                return leader.node_id
    return status.leader_node_id or None


def _member_named(
    status: admin_pb2.ReplicaStatus, node_id: str | None, raft_address: str | None
) -> admin_pb2.Member:
    """The member with that node id and/or Raft address; ConfigError naming the members."""
    for member in status.members:
        if (node_id or member.node_id) == member.node_id and (
            raft_address or member.raft_address
        ) == member.raft_address:
            return member
    known = ", ".join(sorted(m.node_id or m.raft_address for m in status.members)) or "none"
    wanted = " at ".join(filter(None, (node_id, raft_address)))
    raise ConfigError(f"{wanted} is not a member of the cluster (members: {known})")


def _move_leadership(
    leader_gcs: str, node_id: str, other: str, deadline_s: float, key: bytes | None
) -> None:
    """Ask `node_id` (the leader) to hand over, and wait until another member leads.

    The request is repeated every few seconds while `node_id` still leads: a hand-over
    can fail (no follower caught up) or be undone (another operator's `leave` moved
    leadership back to it)."""
    log.info("%s leads: transferring leadership first", node_id)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with AdminClient(leader_gcs, 10.0, key) as client:
                client.transfer_leadership("")
        except (NotLeaderError, UnavailableError, UnknownOutcomeError) as exc:
            log.info("transfer not done (%s); checking who leads", exc)
        round_end = min(end, time.monotonic() + 3.0)
        while time.monotonic() < round_end:
            with contextlib.suppress(GcsHaError):
                new = _leader_id(other)
                if new and new != node_id:
                    return
            time.sleep(0.2)
    raise UnavailableError(f"leadership did not move away from {node_id} in {deadline_s:.0f} s")
