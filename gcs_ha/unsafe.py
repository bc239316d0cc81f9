"""Deliberately unsafe switches, for tests and drills only.

Each one breaks a guarantee on purpose so that a test can show the checks catch it (a
drill or durability test that still passes with the switch on would prove nothing).
They are read from the environment of a replica process at start and logged loudly.

| variable                          | what it breaks                                      |
|-----------------------------------|-----------------------------------------------------|
| GCS_HA_UNSAFE_SKIP_FSYNC=1        | the Raft journal never fsyncs (consensus/journal.py) |
| GCS_HA_UNSAFE_FAIL_FSYNC_FILE=F   | the journal's fsyncs fail with EIO while file F     |
|                                   | exists: a failing disk, on one replica at a chosen  |
|                                   | moment (consensus/journal.py)                       |
| GCS_HA_UNSAFE_FOLLOWER_READS=1    | a follower answers InternalKVGet from its own LMDB  |
|                                   | instead of forwarding it to the leader: reads can   |
|                                   | miss acknowledged writes (not linearizable)         |
"""

from __future__ import annotations

import logging
import os

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
