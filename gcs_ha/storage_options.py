"""The replica options that size its store: LMDB's map, log compaction, the disk reserve.

Sizes are written as a number of bytes with an optional binary unit: `8GiB`, `512MiB`,
`64M` (K/M/G/T and KiB/MiB/GiB/TiB both mean powers of 1024), or a plain number of bytes
(an integer in a config file). `parse_size` raises ConfigError for anything else; `SIZE`
is the click type of such options. `storage_options` adds the options to a click
command; the command receives them as the ReplicaConfig fields they set.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from gcs_ha.consensus.config import ReplicaConfig
from gcs_ha.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])
_UNITS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_DEFAULTS = ReplicaConfig("x", data_dir=Path(), raft_address="", gcs_address="")
MIN_MAP_SIZE = 16 * 2**20


def parse_size(text: str) -> int:
    """Bytes from "8GiB", "512M", "1048576" (ConfigError otherwise)."""
    match = _SIZE.match(text)
    if match is None:
        raise ConfigError(f"not a size: {text!r} (e.g. 8GiB, 512MiB, 1048576)")
    scale: int = 1024 ** _UNITS[match.group(2).upper()]
    return int(match.group(1)) * scale


class SizeType(click.ParamType):  # type: ignore[type-arg, unused-ignore]  # generic in click 8.5
    """A size option: text as `parse_size` reads it, or an int (bytes)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return parse_size(str(value))
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


SIZE = SizeType()


def _mib(n: int) -> str:
    return f"{n // 2**20}MiB"


def storage_options(fn: F) -> F:
    """Add --map-size, --compaction-entries, --compaction-bytes and --disk-reserve."""
    options = [
        click.option(
            "--map-size",
            "map_size_bytes",
            type=SIZE,
            default=_mib(_DEFAULTS.map_size_bytes),
            show_default=True,
            help="The most the store can hold (LMDB's map; a sparse file). Same on every "
            "replica; it can be raised at a restart, never lowered below what is stored.",
        ),
        click.option(
            "--compaction-entries",
            "compaction_min_entries",
            type=click.IntRange(min=100),
            default=_DEFAULTS.compaction_min_entries,
            show_default=True,
            help="Snapshot and compact the Raft log after this many entries...",
        ),
        click.option(
            "--compaction-bytes",
            "compaction_min_bytes",
            type=SIZE,
            default=_mib(_DEFAULTS.compaction_min_bytes),
            show_default=True,
            help="...or once the log holds this much (it is also kept in memory).",
        ),
        click.option(
            "--disk-reserve",
            "disk_reserve_bytes",
            type=SIZE,
            default=_mib(_DEFAULTS.disk_reserve_bytes),
            show_default=True,
            help="Free disk the leader keeps: a write that would leave less (after room "
            "for a snapshot) is refused with RESOURCE_EXHAUSTED.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def with_storage(config: ReplicaConfig, options: Mapping[str, int]) -> ReplicaConfig:
    """`config` with the storage options set, checked (ConfigError for a map too small to
    be useful or a compaction size under 1 MiB)."""
    map_size, compaction_bytes = options["map_size_bytes"], options["compaction_min_bytes"]
    if map_size < MIN_MAP_SIZE:
        raise ConfigError(f"--map-size must be at least {_mib(MIN_MAP_SIZE)}")
    if compaction_bytes < 2**20:
        raise ConfigError("--compaction-bytes must be at least 1MiB")
    return dataclasses.replace(
        config,
        map_size_bytes=map_size,
        compaction_min_bytes=compaction_bytes,
        compaction_min_entries=options["compaction_min_entries"],
        disk_reserve_bytes=options["disk_reserve_bytes"],
    )


def storage_flags(options: Mapping[str, int]) -> list[str]:
    """The command-line flags that give a replica the same storage options."""
    return [
        f"--map-size={options['map_size_bytes']}",
        f"--compaction-entries={options['compaction_min_entries']}",
        f"--compaction-bytes={options['compaction_min_bytes']}",
        f"--disk-reserve={options['disk_reserve_bytes']}",
    ]
