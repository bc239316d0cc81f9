"""gcs_ha.consensus.ipc: frames between a replica's front end and its consensus process."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gcs_ha.consensus import _pysyncobj as ps
from gcs_ha.consensus.config import ReplicaConfig, config_from_doc, config_to_doc
from gcs_ha.consensus.ipc import HEADER, FrameReader, Kind, RaftStatus, Reason, frame
from gcs_ha.consensus.raft_link import error_for
from gcs_ha.errors import (
    ConfigError,
    CorruptDataError,
    InvalidRequestError,
    NotLeaderError,
    UnavailableError,
    UnknownOutcomeError,
)


def test_frames_survive_any_split_of_the_stream() -> None:
    frames = [
        (Kind.PROPOSE, 1, b"entry"),
        (Kind.READ, 2, b""),
        (Kind.DONE, 0, bytes(range(256)) * 300),
        (Kind.STOP, 0, b""),
    ]
    stream = b"".join(frame(kind, rid, body) for kind, rid, body in frames)
    for chunk in (1, 7, 100, len(stream)):
        reader = FrameReader()
        got = []
        for start in range(0, len(stream), chunk):
            got += reader.feed(stream[start : start + chunk])
        assert got == frames
        assert reader.buffered == 0


def test_junk_is_refused() -> None:
    with pytest.raises(CorruptDataError, match="kind 200"):
        FrameReader().feed(HEADER.pack(0, 200, 1))
    with pytest.raises(CorruptDataError, match="length"):
        FrameReader().feed(HEADER.pack(2**31, Kind.PROPOSE, 1))


def test_status_round_trips_through_json() -> None:
    status = RaftStatus(
        state=2,
        term=7,
        leader="127.0.0.1:1",
        commit_index=10,
        last_applied=9,
        log_length=3,
        last_log_index=11,
        has_quorum=True,
        self_address="127.0.0.1:1",
        peers=("127.0.0.1:2", "127.0.0.1:3"),
        match_index={"127.0.0.1:2": 11},
        connected=frozenset({"127.0.0.1:2"}),
        taken_at=12.5,
        snapshots=2,
    )
    assert RaftStatus.from_json(status.to_json()) == status
    with pytest.raises(CorruptDataError):
        RaftStatus.from_json(b'{"state": 1}')


def test_config_round_trips_through_its_document(tmp_path: Path) -> None:
    config = ReplicaConfig(
        node_id="r1",
        data_dir=tmp_path,
        raft_address="127.0.0.1:1",
        gcs_address="127.0.0.1:2",
        peers=("127.0.0.1:3",),
        secret=b"\x00secret",
    )
    assert config_from_doc(config_to_doc(config)) == config
    insecure = dataclasses.replace(config, secret=None, insecure=True)
    assert config_from_doc(config_to_doc(insecure)) == insecure
    with pytest.raises(ConfigError):
        config_from_doc({"node_id": "r1"})


def test_reasons_are_pysyncobjs_codes() -> None:
    for name in ("SUCCESS", "QUEUE_FULL", "MISSING_LEADER", "DISCARDED", "NOT_LEADER",
                 "LEADER_CHANGED", "REQUEST_DENIED", "UNKNOWN_OUTCOME"):  # fmt: skip
        assert Reason[name] == getattr(ps.FAIL_REASON, name)


@pytest.mark.parametrize(
    ("reason", "error"),
    [
        (Reason.QUEUE_FULL, UnavailableError),
        (Reason.NOT_LEADER, NotLeaderError),
        (Reason.MISSING_LEADER, NotLeaderError),
        (Reason.REQUEST_DENIED, UnavailableError),
        (Reason.REFUSED, InvalidRequestError),
        (Reason.FAILED, UnavailableError),
        (Reason.DISCARDED, UnknownOutcomeError),
        (Reason.LEADER_CHANGED, UnknownOutcomeError),
        (Reason.UNKNOWN_OUTCOME, UnknownOutcomeError),
    ],
)
def test_every_failure_becomes_a_gcs_ha_error(reason: Reason, error: type) -> None:
    assert type(error_for(reason, "why")) is error
