"""The hand-off's option (--handoff-timeout, GCS_HA_HANDOFF_TIMEOUT); the hand-off itself
runs on real replicas in tests/integration/test_replica.py and
tests/e2e/test_rolling_upgrade.py."""

from __future__ import annotations

import click
from click.testing import CliRunner

from gcs_ha.cli import cli

REQUIRED = ["--node-id=r0", "--data-dir=d", "--raft-address=127.0.0.1:1", "--gcs-address=:2"]


def handoff_s(*args: str) -> object:
    assert isinstance(cli, click.Group)
    start = cli.commands["start"]
    with start.make_context("start", [*REQUIRED, *args]) as ctx:
        return ctx.params["handoff_timeout_s"]


def test_the_timeout_defaults_to_three_seconds_and_zero_turns_it_off() -> None:
    assert handoff_s() == 3.0
    assert handoff_s("--handoff-timeout=0s") == 0.0
    assert handoff_s("--handoff-timeout=1500ms") == 1.5


def test_a_bad_timeout_is_refused_by_name() -> None:
    for bad in ("-1s", "soon", "3"):
        result = CliRunner().invoke(cli, ["start", *REQUIRED, f"--handoff-timeout={bad}"])
        assert result.exit_code == 2
        assert "--handoff-timeout" in result.output and "not a duration" in result.output
    env = {"GCS_HA_HANDOFF_TIMEOUT": "soon"}
    result = CliRunner().invoke(cli, ["start", *REQUIRED], env=env)
    assert result.exit_code == 2 and "GCS_HA_HANDOFF_TIMEOUT" in result.output
