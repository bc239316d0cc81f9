"""gcs_ha.raft_options: durations, the checks of --election-timeout, --heartbeat and
--leader-fallback, and the way the timing travels (CONFIG frame document, pysyncobj's
settings, the flags `gcs-ha up` gives its replicas)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gcs_ha.cli import cli
from gcs_ha.consensus import _pysyncobj as ps
from gcs_ha.consensus.config import RaftTiming, ReplicaConfig, config_from_doc, config_to_doc
from gcs_ha.errors import ConfigError
from gcs_ha.raft_options import (
    format_duration,
    parse_duration,
    raft_timing,
    timing_flags,
    with_timing,
)
from gcs_ha.storage_options import storage_flags


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("300ms", 0.3), ("0.3s", 0.3), ("2s", 2.0), (" 1.5 S ", 1.5), ("40MS", 0.04), (".5s", 0.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["300", "0.3", "1m", "-1s", "ms", "1e3ms", ""])
def test_a_duration_needs_a_number_and_a_unit(text: str) -> None:
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration(text)


def test_the_default_options_are_the_tuned_timing() -> None:
    assert raft_timing(0.3, 0.05) == RaftTiming()
    timing = raft_timing(1.0, 0.1)
    assert (timing.election_min_s, timing.election_max_s) == (1.0, 2.0)
    assert timing.leader_fallback_s == 2.0  # twice the election timeout, as the default
    assert raft_timing(1.0, 0.1, 1.0).leader_fallback_s == 1.0


@pytest.mark.parametrize(
    ("election", "heartbeat", "fallback", "message"),
    [
        (0.3, 0.1, None, "--heartbeat 100ms must be less than a third of --election-timeout"),
        (0.3, 0.005, None, "--heartbeat must be at least 10ms"),
        (0.04, 0.01, None, "--election-timeout must be between 50ms and 10s"),
        (10.5, 0.05, None, "--election-timeout must be between 50ms and 10s"),
        (0.3, 0.05, 0.2, "--leader-fallback 200ms must be at least --election-timeout 300ms"),
        (1.0, 0.05, 61.0, "--leader-fallback must be at most 60s"),
    ],
)
def test_timing_that_does_not_fit_is_refused_naming_the_option(
    election: float, heartbeat: float, fallback: float | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        raft_timing(election, heartbeat, fallback)


def test_every_timing_accepted_is_one_pysyncobj_accepts() -> None:
    """At the edges of our checks (heartbeat just under a third of the timeout, fallback
    equal to it), pysyncobj's own validation passes and holds the values."""
    for timing in (raft_timing(0.3, 0.099, 0.3), raft_timing(0.05, 0.01), raft_timing(10, 3, 60)):
        conf = ps.make_conf(bind_address="127.0.0.1:1", password=None, insecure=True, timing=timing)
        assert (conf.raftMinTimeout, conf.raftMaxTimeout) == (
            timing.election_min_s, timing.election_max_s,
        )  # fmt: skip
        assert conf.appendEntriesPeriod == timing.heartbeat_s
        assert conf.leaderFallbackTimeout == timing.leader_fallback_s


def test_the_timing_travels_in_the_config_frame() -> None:
    options = {"election_timeout_s": 0.75, "heartbeat_s": 0.04, "leader_fallback_s": 2.0}
    config = with_timing(ReplicaConfig("r0", Path("d"), "127.0.0.1:1", "127.0.0.1:2"), options)
    assert config_from_doc(config_to_doc(config)).timing == raft_timing(0.75, 0.04, 2.0)


def test_up_gives_its_replicas_flags_that_read_back_the_same() -> None:
    """`gcs-ha up --map-size ... --election-timeout ...` hands its replicas these flags."""
    start = cli.commands["start"]
    args = ["--node-id=r0", "--data-dir=d", "--raft-address=:1", "--gcs-address=:2"]
    tuned = ["--map-size=3GiB", "--compaction-bytes=1048577", "--election-timeout=1.25s"]
    tuned += ["--heartbeat=30ms", "--leader-fallback=4s"]
    with start.make_context("start", [*args, *tuned]) as ctx:
        first = dict(ctx.params)
    flags = storage_flags(first) + timing_flags(first)
    with start.make_context("start", [*args, *flags]) as ctx:
        assert ctx.params == first
