"""Deliberately unsafe switches, for tests and drills only: each breaks a guarantee on
purpose so that a test can show the checks catch it. Read from a replica's environment
at start and logged loudly. The switches: docs/robustness.md ("Unsafe switches").
"""

from __future__ import annotations

import logging
import os

from gcs_ha.errors import ConfigError

log = logging.getLogger(__name__)

UNSAFE_FOLLOWER_READS_ENV = "GCS_HA_UNSAFE_FOLLOWER_READS"
KV_GET_METHOD = "/ray.rpc.InternalKVGcsService/InternalKVGet"


def follower_reads() -> bool:
    """Whether GCS_HA_UNSAFE_FOLLOWER_READS=1 (logged as a warning when it is)."""
    on = os.environ.get(UNSAFE_FOLLOWER_READS_ENV) == "1"
    if on:
        log.warning(
            "!!! %s=1: followers answer InternalKVGet from their own state. Reads are NOT "
            "linearizable. For tests only. !!!",
            UNSAFE_FOLLOWER_READS_ENV,
        )
    return on


UNSAFE_ENTRY_VERSION_ENV = "GCS_HA_UNSAFE_ENTRY_VERSION"
_claim_logged = False


def claimed_entry_version() -> int | None:
    """The log entry format GCS_HA_UNSAFE_ENTRY_VERSION=N makes this replica claim to read
    and write (None when unset; logged as a warning once per process). ConfigError for
    a value that is not an integer >= 1."""
    global _claim_logged  # noqa: PLW0603 (one warning per process)
    text = os.environ.get(UNSAFE_ENTRY_VERSION_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{UNSAFE_ENTRY_VERSION_ENV}={text!r}: give an integer >= 1")
    if not _claim_logged:
        _claim_logged = True
        log.warning(
            "!!! %s=%s: this replica claims to read log entry formats up to %s (format 1 "
            "under another number). For tests of the cluster version gate only. !!!",
            UNSAFE_ENTRY_VERSION_ENV,
            text,
            text,
        )
    return int(text)
