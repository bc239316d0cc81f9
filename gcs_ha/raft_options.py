"""The replica options that set its Raft timing: election timeout, heartbeat, leader fallback.

`parse_duration` reads durations with a unit (`300ms`, `0.3s`; a bare number is refused),
`DURATION` is their click type, `timing_options` adds the options to a command, and
`raft_timing` checks them together and makes the `RaftTiming`. What each costs:
docs/configuration.md, "Raft timing".

Errors: ConfigError naming the option for a bad duration or values that do not fit.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from gcs_ha.consensus.config import RaftTiming, ReplicaConfig
from gcs_ha.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)\s*$", re.IGNORECASE)
_DEFAULTS = RaftTiming()
MIN_ELECTION_S = 0.05  # five ticks of the consensus loop
MAX_ELECTION_S = 10.0  # a dead machine's leadership then moves within about 20 s
MAX_FALLBACK_S = 60.0  # Ray's clients give up on an unanswering GCS after 60 s
MIN_HEARTBEAT_S = _DEFAULTS.tick_s  # the consensus loop cannot send heartbeats any faster


def parse_duration(text: str) -> float:
    """Seconds from "300ms", "0.3s", "2s" (ConfigError otherwise)."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(f"not a duration: {text!r} (give a unit: 300ms, 0.3s, 2s)")
    value = float(match.group(1))
    return value / 1000 if match.group(2).lower() == "ms" else value


def format_duration(seconds: float) -> str:
    """The shortest text `parse_duration` reads back as `seconds`: "300ms", "1.5s"."""
    ms = seconds * 1000
    if ms < 1000 and abs(ms - round(ms)) < 1e-9:
        return f"{round(ms)}ms"
    return f"{seconds!r}".removesuffix(".0") + "s"


class DurationType(click.ParamType):  # type: ignore[type-arg, unused-ignore]  # generic in 8.5
    """A duration option: text as `parse_duration` reads it (a float of seconds passes)."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


DURATION = DurationType()


def timing_options(fn: F) -> F:
    """Add --election-timeout, --heartbeat and --leader-fallback."""
    options = [
        click.option(
            "--election-timeout",
            "election_timeout_s",
            type=DURATION,
            default=format_duration(_DEFAULTS.election_min_s),
            show_default=True,
            help="A follower that hears nothing from the leader for a random 1 to 2 times "
            "this stands for election: failover takes about this plus a little, when the "
            "leader's machine dies (a leader's process that dies is noticed at once).",
        ),
        click.option(
            "--heartbeat",
            "heartbeat_s",
            type=DURATION,
            default=format_duration(_DEFAULTS.heartbeat_s),
            show_default=True,
            help="How often the leader reminds followers it leads (less than a third of "
            "--election-timeout).",
        ),
        click.option(
            "--leader-fallback",
            "leader_fallback_s",
            type=DURATION,
            show_default="twice --election-timeout",
            help="A leader that hears from no majority for this long steps down "
            "(check-quorum; at least --election-timeout).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def raft_timing(
    election_timeout_s: float, heartbeat_s: float, leader_fallback_s: float | None = None
) -> RaftTiming:
    """The timing the options give, checked (ConfigError naming the option)."""
    election, heartbeat = election_timeout_s, heartbeat_s
    fallback = 2 * election if leader_fallback_s is None else leader_fallback_s
    shown = format_duration
    if not MIN_ELECTION_S <= election <= MAX_ELECTION_S:
        raise ConfigError(
            f"--election-timeout must be between {shown(MIN_ELECTION_S)} and "
            f"{shown(MAX_ELECTION_S)}"
        )
    if heartbeat < MIN_HEARTBEAT_S:
        raise ConfigError(f"--heartbeat must be at least {shown(MIN_HEARTBEAT_S)}")
    if 3 * heartbeat >= election:
        raise ConfigError(
            f"--heartbeat {shown(heartbeat)} must be less than a third of "
            f"--election-timeout {shown(election)}: a follower must hear several "
            "heartbeats per timeout, or it stands for election against a live leader"
        )
    if fallback < election:
        raise ConfigError(
            f"--leader-fallback {shown(fallback)} must be at least --election-timeout "
            f"{shown(election)}: a leader would give up before its followers would stand"
        )
    if fallback > MAX_FALLBACK_S:
        raise ConfigError(
            f"--leader-fallback must be at most {shown(MAX_FALLBACK_S)}: a leader cut off "
            "from the others believes it leads that long"
        )
    return dataclasses.replace(
        _DEFAULTS,
        election_min_s=election,
        election_max_s=2 * election,
        heartbeat_s=heartbeat,
        leader_fallback_s=fallback,
    )


def with_timing(config: ReplicaConfig, options: Mapping[str, Any]) -> ReplicaConfig:
    """`config` with the timing of `timing_options`' values (ConfigError if they do not fit)."""
    timing = raft_timing(
        options["election_timeout_s"], options["heartbeat_s"], options["leader_fallback_s"]
    )
    return dataclasses.replace(config, timing=timing)


def timing_flags(options: Mapping[str, Any]) -> list[str]:
    """The command-line flags that give a replica the same timing options."""
    flags = [
        f"--election-timeout={format_duration(options['election_timeout_s'])}",
        f"--heartbeat={format_duration(options['heartbeat_s'])}",
    ]
    if options["leader_fallback_s"] is not None:
        flags.append(f"--leader-fallback={format_duration(options['leader_fallback_s'])}")
    return flags
