"""The leader refuses a write it could not apply, before it is proposed.

`CapacityGuard.admit(request)` refuses a put that would leave less than `map_headroom`
of LMDB's map, or less than `disk_reserve_bytes` of disk, free; deletes, job ids and
barriers always pass. Why and how it is measured: DESIGN.md, "Capacity".

Errors raised: StoreFullError, a ResourceExhaustedError (gRPC RESOURCE_EXHAUSTED, also
for Ray's own services, where other refusals are UNAVAILABLE: server/status.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gcs_ha.consensus import envelope
from gcs_ha.errors import StoreFullError
from gcs_ha.proto import raft_log_pb2 as pb
from gcs_ha.storage.lmdb_env import LmdbEnv

REFRESH_S = 0.05
MIN_MAP_HEADROOM = 4 * 2**20


@dataclass(frozen=True)
class Room:
    """What was measured: bytes of the map in use and its size, bytes free on the disk,
    bytes allocated to LMDB's data file."""

    map_used: int
    map_size: int
    disk_free: int
    data_file: int


class CapacityGuard:
    """Admits writes while there is room for them (see the module docstring)."""

    def __init__(
        self,
        lmdb_dir: Path,
        env: Callable[[], LmdbEnv],
        map_size_bytes: int,
        disk_reserve_bytes: int,
    ) -> None:
        self._lmdb_dir = lmdb_dir
        self._env = env
        self._map_size = map_size_bytes
        self._map_headroom = max(map_size_bytes // 8, MIN_MAP_HEADROOM)
        self._disk_reserve = disk_reserve_bytes
        self._room: Room | None = None
        self._measured_at = 0.0
        self._admitted = 0  # bytes of puts admitted since the last measurement
        self.refused = 0

    def admit(self, request: pb.Request) -> None:
        """Raise StoreFullError when `request` is a put there is no room for."""
        if request.WhichOneof("op") != "put":
            return
        size = envelope.request_size(request)
        room = self._measure()
        used = room.map_used + self._admitted + size
        if used > room.map_size - self._map_headroom:
            self._refuse(
                f"LMDB's map would hold {used} of {room.map_size} bytes, less than "
                f"{self._map_headroom} free (raise --map-size)"
            )
        lmdb_growth = max(0, used - room.data_file)
        needed = self._admitted + size + lmdb_growth + used + self._disk_reserve
        if needed > room.disk_free:
            self._refuse(
                f"the data dir's disk has {room.disk_free} bytes free; this write needs "
                f"{needed} (journal, LMDB, a snapshot of {used} bytes and the "
                f"{self._disk_reserve}-byte reserve)"
            )
        self._admitted += size

    def _refuse(self, why: str) -> None:
        self.refused += 1
        raise StoreFullError(
            f"the GCS store is full: {why}; reads and deletes still work, and writes are "
            "accepted again once space is freed"
        )

    def measure(self) -> Room:
        """The room measured last, measured again when older than REFRESH_S."""
        return self._measure()

    def _measure(self) -> Room:
        now = time.monotonic()
        if self._room is None or now - self._measured_at >= REFRESH_S:
            fs = os.statvfs(self._lmdb_dir)
            data = self._lmdb_dir / "data.mdb"
            allocated = data.stat().st_blocks * 512 if data.exists() else 0
            used = self._env().live_bytes()
            self._room = Room(used, self._map_size, fs.f_bavail * fs.f_frsize, allocated)
            self._measured_at, self._admitted = now, 0
        return self._room
