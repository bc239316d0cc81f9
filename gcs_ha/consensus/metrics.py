"""The consensus process's metrics (Prometheus, in a registry of its own).

The journal, the state machine and the snapshotter report durations through the
`observe_*` callables of one `ConsensusMetrics`; the journal's size is read when the front
end asks for the text (ipc.py METRICS), so they cost nothing in between. The front end serves the
text next to its own (server/http_endpoint.py). docs/monitoring.md lists every metric.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Gauge, ProcessCollector

from gcs_ha.metrics_support import (
    DISK_BUCKETS,
    FAST_BUCKETS,
    PREFIX,
    SLOW_BUCKETS,
    CheapHistogram,
    GcPauses,
    exposition,
    new_registry,
)

Observe = Callable[[float], None]


class ConsensusMetrics:
    """Durations observed by the consensus layer, and sizes read on demand."""

    def __init__(self) -> None:
        self.registry = registry = new_registry()

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Observe:
            return CheapHistogram(registry, f"{PREFIX}_{name}", doc, buckets).observer()

        self.observe_fsync = histogram(
            "disk_wal_fsync_duration_seconds",
            "fsync/fdatasync of the Raft journal (the latency every write waits for)",
            DISK_BUCKETS,
        )
        self.observe_commit = histogram(
            "disk_backend_commit_duration_seconds",
            "LMDB commits of the entries applied in one tick",
            DISK_BUCKETS,
        )
        self.observe_apply = histogram(
            "server_apply_duration_seconds",
            "applying one committed log entry to LMDB",
            FAST_BUCKETS,
        )
        self.observe_snapshot_save = histogram(
            "snapshot_save_duration_seconds",
            "writing a snapshot (LMDB image copied, checksummed and fsynced)",
            SLOW_BUCKETS,
        )
        self.observe_snapshot_apply = histogram(
            "snapshot_apply_duration_seconds",
            "installing a snapshot received from the leader (image checked and installed)",
            SLOW_BUCKETS,
        )
        ProcessCollector(namespace=f"{PREFIX}_consensus", registry=registry)
        self._gc = GcPauses(registry, "consensus")

    def watch_journal(self, journal_bytes: Callable[[], int]) -> None:
        """Report the journal's size, read at each scrape (LMDB's sizes are the front
        end's: it measures them for the capacity guard)."""
        Gauge(
            f"{PREFIX}_raft_journal_bytes",
            "bytes of the Raft journal (the entries since the last compaction)",
            registry=self.registry,
        ).set_function(journal_bytes)

    def text(self) -> bytes:
        """Prometheus's text format of every metric of this process."""
        return exposition(self.registry)

    def close(self) -> None:
        self._gc.close()
