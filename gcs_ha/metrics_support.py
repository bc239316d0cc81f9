"""Prometheus pieces shared by a replica's two processes (front end and consensus).

Each process keeps its metrics in a registry of its own (never prometheus_client's global
one: tests run several replicas in one process). The front end serves both on its HTTP
listener (server/http_endpoint.py); the consensus process sends its exposition text over
the replica's stream when asked (consensus/ipc.py METRICS).

Names follow etcd's where they mean the same (`etcd_disk_wal_fsync_duration_seconds` is
`gcs_ha_disk_wal_fsync_duration_seconds`), so dashboards and alerts written for etcd read
naturally. Durations are seconds, sizes bytes.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest

PREFIX = "gcs_ha"

# Bucket bounds, in seconds.
DISK_BUCKETS = tuple(0.0005 * 2**k for k in range(15))  # 0.5 ms .. 8 s, like etcd's
FAST_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                0.05, 0.1, 0.25, 0.5, 1.0)  # fmt: skip
SLOW_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
               2.5, 5.0, 10.0, 30.0, 60.0)  # fmt: skip


def new_registry() -> CollectorRegistry:
    """A registry of this process's own (see the module docstring)."""
    return CollectorRegistry(auto_describe=False)


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus's text format."""
    return generate_latest(registry)


class GcPauses:
    """Observes every collection of Python's garbage collector as one pause (the whole
    interpreter stops for it): `gcs_ha_gc_pause_seconds{process, generation}`.
    `close()` stops observing."""

    def __init__(self, registry: CollectorRegistry, process: str) -> None:
        self._histogram = Histogram(
            f"{PREFIX}_gc_pause_seconds",
            "Python garbage collector pauses, by generation",
            ["process", "generation"],
            buckets=FAST_BUCKETS,
            registry=registry,
        )
        self._children = [self._histogram.labels(process, str(g)) for g in range(3)]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = int(info.get("generation", 0))
        if 0 <= generation < len(self._children) and self._started:
            self._children[generation].observe(time.perf_counter() - self._started)

    def close(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
