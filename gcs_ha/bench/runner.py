"""A replica process that writes while it serves: the subject of `gcs-ha bench failover`.

`python -m gcs_ha.bench.runner ... --ack-log FILE` is `gcs-ha start` plus writers while
the replica serves; each `serving` and `ack` event is appended to the ack log with a
CLOCK_MONOTONIC timestamp (format in DESIGN.md, "`bench failover`").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from gcs_ha.consensus.api import Replica
from gcs_ha.consensus.config import ReplicaConfig
from gcs_ha.errors import GcsHaError
from gcs_ha.secret import read_secret_file
from gcs_ha.server.interpreter import run_front_end
from gcs_ha.server.replica_main import ReplicaProcess, default_replica_factory
from gcs_ha.storage.store_client import KV_TABLE

log = logging.getLogger(__name__)

ERROR_PAUSE_S = 0.01


class AckLog:
    """Appends timestamped event lines to a file, one write(2) per line."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def event(self, kind: str, term: int) -> None:
        os.write(self._fd, f"{kind} {term} {time.monotonic():.6f}\n".encode())

    def close(self) -> None:
        os.close(self._fd)


class ServingWriters:
    """A LeadershipListener: writes continuously while the replica serves."""

    def __init__(
        self, node_id: str, ack_log: AckLog, writers: int, interval_s: float, value: bytes
    ) -> None:
        self.replica: Replica | None = None
        self._node_id = node_id
        self._log = ack_log
        self._writers = writers
        self._interval_s = interval_s
        self._value = value
        self._tasks: list[asyncio.Task[None]] = []

    def on_serving(self, term: int) -> None:
        self._log.event("serving", term)
        self._cancel()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._write(term, w)) for w in range(self._writers)]
        for task in self._tasks:
            task.add_done_callback(_report_failure)

    def on_demoted(self) -> None:
        self._cancel()

    def _cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    async def _write(self, term: int, writer: int) -> None:
        assert self.replica is not None
        store = self.replica.store
        seq = 0
        while True:
            key = f"failover/{self._node_id}/{term}/{writer}/{seq}".encode()
            seq += 1
            try:
                await store.put(KV_TABLE, key, self._value)
            except GcsHaError as exc:
                log.info("write failed: %s", exc)
                await asyncio.sleep(ERROR_PAUSE_S)
                continue
            self._log.event("ack", term)
            await asyncio.sleep(self._interval_s)


def _report_failure(task: asyncio.Task[None]) -> None:
    """A writer that died of anything but cancellation is logged, not swallowed."""
    if not task.cancelled() and task.exception() is not None:
        log.error("writer failed", exc_info=task.exception())


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gcs_ha.bench.runner")
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--raft-address", required=True)
    parser.add_argument("--gcs-address", required=True)
    parser.add_argument("--peer", action="append", default=[])
    parser.add_argument("--secret-file", required=True, type=Path)
    parser.add_argument("--cluster-name", default="gcs-ha-bench")
    parser.add_argument("--ack-log", required=True, type=Path)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--value-bytes", type=int, default=200)
    parser.add_argument("--log-level", default="warning")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s %(levelname)s {args.node_id} %(name)s: %(message)s",
    )
    config = ReplicaConfig(
        node_id=args.node_id,
        data_dir=args.data_dir,
        raft_address=args.raft_address,
        gcs_address=args.gcs_address,
        peers=tuple(args.peer),
        secret=read_secret_file(args.secret_file),
        cluster_name=args.cluster_name,
    )
    ack_log = AckLog(args.ack_log)
    writers = ServingWriters(
        args.node_id, ack_log, args.writers, args.interval, os.urandom(args.value_bytes)
    )

    def factory(cfg: ReplicaConfig) -> Replica:
        replica = default_replica_factory(cfg)
        writers.replica = replica
        replica.add_listener(writers)
        return replica

    try:
        return run_front_end(ReplicaProcess(config, replica_factory=factory).run())
    finally:
        with contextlib.suppress(OSError):
            ack_log.close()


if __name__ == "__main__":
    sys.exit(main())
