"""A replica restarted in the middle of an election never votes twice in one term.

Raft's safety rests on it: one vote per term per node, kept across crashes and power loss
(pysyncobj issue #201; docs/durability.md). A real pysyncobj SyncObj with our patch layer
and a DurableJournal is the voter. It does not tick (autoTick off), so nothing but the
messages we hand to its message handler moves it; what it sends is captured on its real
transport (behind the patch layer's flush-before-vote hook).

Sequence: candidate A asks for a vote in term T and gets it; the voter stops; optionally a
simulated power loss (GCS_HA_CRASH_SIM=1, then `drop_unsynced` on its journal); the voter
restarts from the same journal; candidate B asks for a vote in the same term T with an
equally up-to-date log. It must refuse (send nothing), unless the journal's fsync is
switched off (GCS_HA_UNSAFE_SKIP_FSYNC=1) and the power loss took the vote away: then it
votes twice, which shows the test can see the bug. Ports: 127.0.0.1:27900-27999.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from gcs_ha.consensus._pysyncobj import SyncObj, TCPNode, make_conf
from gcs_ha.consensus.journal import CRASH_SIM_ENV, UNSAFE_SKIP_FSYNC_ENV, DurableJournal
from gcs_ha.testing.powerloss import META_REMOVED, META_RESTORED, drop_unsynced

_ports = itertools.count(27900)
TERM = 7


class Voter:
    """A non-ticking SyncObj on a DurableJournal whose outgoing messages are recorded."""

    def __init__(self, address: str, peers: list[str], journal_path: Path) -> None:
        self.journal = DurableJournal(journal_path)
        conf = make_conf(bind_address=address, password=None, insecure=True, journal=self.journal)
        conf.autoTick = False
        self.node: Any = SyncObj(address, peers, conf)
        self.sent: list[tuple[str, dict[str, Any]]] = []
        transport = self.node._SyncObj__transport
        patched_send = type(transport).send  # the patch layer's send (flushes before a vote)

        def record(node: Any, message: Any) -> bool:
            self.sent.append((str(node.id), dict(message)))
            sent: bool = patched_send(transport, node, message)
            return sent

        transport.send = record

    def request_vote(self, candidate: str, term: int) -> list[str]:
        """Deliver candidate's RequestVote; returns the candidates granted a vote by it."""
        before = len(self.sent)
        message = {"type": "request_vote", "term": term, "last_log_index": 1, "last_log_term": 0}
        self.node._SyncObj__onMessageReceived(TCPNode(candidate), message)
        return [
            to
            for to, msg in self.sent[before:]
            if msg["type"] == "response_vote" and msg["term"] == term
        ]

    @property
    def term(self) -> int:
        return int(self.node.raftCurrentTerm)

    def stop(self) -> None:
        self.node.destroy()  # closes the transport and the journal (close() does not fsync)


@pytest.mark.parametrize(
    ("unsafe", "power_loss"),
    [(False, False), (False, True), (True, False), (True, True)],
    ids=["fsync-restart", "fsync-powerloss", "nofsync-restart", "nofsync-powerloss"],
)
def test_restarted_voter_never_votes_twice_in_a_term(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unsafe: bool, power_loss: bool
) -> None:
    monkeypatch.setenv(CRASH_SIM_ENV, "1")
    if unsafe:
        monkeypatch.setenv(UNSAFE_SKIP_FSYNC_ENV, "1")
    else:
        monkeypatch.delenv(UNSAFE_SKIP_FSYNC_ENV, raising=False)
    voter_addr, a, b = (f"127.0.0.1:{next(_ports)}" for _ in range(3))
    journal = tmp_path / "raft" / "journal"
    journal.parent.mkdir()

    voter = Voter(voter_addr, [a, b], journal)
    try:
        assert voter.request_vote(a, TERM) == [a]
        assert voter.request_vote(b, TERM) == []  # the same process remembers its vote
    finally:
        voter.stop()

    if power_loss:
        report = drop_unsynced(journal)
        assert report.meta == (META_REMOVED if unsafe else META_RESTORED)

    voter = Voter(voter_addr, [a, b], journal)
    try:
        granted = voter.request_vote(b, TERM)
        if unsafe and power_loss:
            # Without fsync the vote for A did not survive: B gets a second vote in TERM.
            assert granted == [b]
        else:
            assert granted == []
            assert voter.term == TERM
            assert voter.journal.getVotedForNodeId() == a
    finally:
        voter.stop()
