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

import bisect
import gc
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

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


class CheapHistogram(Collector):
    """A histogram whose observation only bumps plain integers (no lock): for hot paths
    observed from one thread at a time. prometheus_client's Histogram takes a lock per
    observation and per bucket, and cost three times as much on a collection callback.
    A race between two threads may lose one count: fine for these metrics."""

    def __init__(
        self,
        registry: CollectorRegistry,
        name: str,
        doc: str,
        buckets: tuple[float, ...],
        labels: tuple[str, ...] = (),
    ) -> None:
        self._name, self._doc, self._buckets, self._labels = name, doc, buckets, labels
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}
        registry.register(self)

    def observer(self, *values: str) -> Callable[[float], None]:
        """The observe function of the series with these label values."""
        counts, total = self._series.setdefault(values, ([0] * (len(self._buckets) + 1), [0.0]))
        buckets = self._buckets

        def observe(seconds: float) -> None:
            counts[bisect.bisect_left(buckets, seconds)] += 1
            total[0] += seconds

        return observe

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._doc, labels=list(self._labels))
        bounds = [*(str(b) for b in self._buckets), "+Inf"]
        for values, (counts, total) in self._series.items():
            cumulative = itertools.accumulate(counts)
            family.add_metric(list(values), list(zip(bounds, cumulative, strict=True)), total[0])
        yield family


class GcPauses:
    """Observes every collection of Python's garbage collector as one pause (the whole
    interpreter stops for it): `gcs_ha_gc_pause_seconds{process, generation}`. The
    callback runs at every collection (generation 0: every few hundred allocations), so
    it stays short. `close()` stops observing."""

    def __init__(self, registry: CollectorRegistry, process: str) -> None:
        histogram = CheapHistogram(
            registry,
            f"{PREFIX}_gc_pause_seconds",
            "Python garbage collector pauses, by generation",
            FAST_BUCKETS,
            ("process", "generation"),
        )
        self._observe = [histogram.observer(process, str(g)) for g in range(3)]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            self._observe[info["generation"]](time.perf_counter() - self._started)

    def close(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
