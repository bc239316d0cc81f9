"""Log entry formats and the cluster version gate (consensus/envelope.py, versions.py)."""

from __future__ import annotations

import pytest

from gcs_ha import unsafe
from gcs_ha.cli import render_table
from gcs_ha.cluster_view import ClusterView, MemberView
from gcs_ha.consensus import envelope
from gcs_ha.consensus.api import MemberInfo
from gcs_ha.consensus.membership import member_record
from gcs_ha.consensus.replica import member_from_record
from gcs_ha.consensus.versions import cluster_version
from gcs_ha.errors import ConfigError, CorruptDataError

PUT = envelope.put("kv", b"k", b"v", True)


def test_a_build_reads_every_format_up_to_its_newest() -> None:
    for version in (1, 2, 3):
        entry = envelope.decode(envelope.encode([PUT], version), newest=3)
        assert entry.version == version and list(entry.requests) == [PUT]


def test_a_newer_format_is_refused_with_a_message_that_says_to_upgrade() -> None:
    data = envelope.encode([PUT], 2)
    with pytest.raises(CorruptDataError, match=r"format 2 is newer .* upgrade this replica"):
        envelope.decode(data)  # this build: format 1
    with pytest.raises(CorruptDataError, match="without a format version"):
        envelope.decode(envelope.pb.LogEntry(requests=[PUT]).SerializeToString())


def member(node: str, version: int) -> MemberInfo:
    return MemberInfo(node, f"h:{node}", f"g:{node}", version)


def test_the_cluster_version_is_the_lowest_format_over_the_raft_members() -> None:
    registered = {m.node_id: m for m in (member("a", 2), member("b", 2), member("c", 1))}
    assert cluster_version(2, ["h:a", "h:b"], registered) == 2
    assert cluster_version(2, ["h:a", "h:b", "h:c"], registered) == 1
    assert cluster_version(1, ["h:a", "h:b"], registered) == 1  # this replica's own
    # A member that has not registered (an interrupted join, a new replica) counts as 1.
    assert cluster_version(2, ["h:a", "h:unregistered"], registered) == 1
    # A registration that is not (or no longer) a Raft member does not count.
    assert cluster_version(3, ["h:a"], {"a": member("a", 3), "c": member("c", 1)}) == 3


def test_a_record_of_a_build_before_the_gate_reads_as_format_1() -> None:
    old = b'{"gcs_address": "g:a", "raft_address": "h:a"}'
    assert member_from_record("a", old) == MemberInfo("a", "h:a", "g:a", 1)
    new = member("a", 2)
    assert member_from_record("a", member_record(new)) == new
    assert member_from_record("a", b'{"gcs_address": "", "raft_address": "h:a", '
                              b'"entry_version": "x"}').entry_version == 1  # fmt: skip


def test_the_unsafe_claim_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(unsafe.UNSAFE_ENTRY_VERSION_ENV, raising=False)
    assert unsafe.claimed_entry_version() is None
    assert envelope.newest_version() == envelope.ENTRY_VERSION
    monkeypatch.setenv(unsafe.UNSAFE_ENTRY_VERSION_ENV, "2")
    assert envelope.newest_version() == 2
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(unsafe.UNSAFE_ENTRY_VERSION_ENV, bad)
        with pytest.raises(ConfigError, match=unsafe.UNSAFE_ENTRY_VERSION_ENV):
            unsafe.claimed_entry_version()


def view(versions: dict[str, int | None], cluster: int | None) -> ClusterView:
    members = [
        MemberView(name, "follower", 1, 5, 5, 0, f"g:{name}", f"h:{name}", False, v is not None, v)
        for name, v in versions.items()
    ]
    return ClusterView("a", members, cluster)


def test_status_shows_the_cluster_version_and_while_builds_differ_each_members() -> None:
    same = view({"a": 1, "b": 1, "c": None}, 1)  # c did not answer
    assert render_table(same).splitlines()[-1] == "cluster version: 1"
    mixed = view({"a": 2, "b": 2, "c": 1}, 1)
    line = render_table(mixed).splitlines()[-1]
    assert line == "cluster version: 1 (newest format each member reads: a 2, b 2, c 1)"
    doc = mixed.to_json()
    assert doc["cluster_version"] == 1
    assert [m["entry_version"] for m in doc["members"]] == [2, 2, 1]  # type: ignore[index, union-attr]
    assert render_table(view({"a": None}, None)).splitlines()[-1] == "cluster version: -"
