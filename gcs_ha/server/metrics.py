"""A replica's metrics, as its HTTP listener serves them on /metrics.

One Prometheus text from this process's registry (grpc_metrics.py, GC pauses, process
metrics and `ReplicaStateCollector`, which reads the replica's state at each scrape) and
the consensus process's (consensus/metrics.py), asked for over the replica's stream; when
that does not answer within CONSENSUS_TIMEOUT_S the scrape still succeeds, with
`gcs_ha_consensus_metrics_up 0`. Every name, and what to alert on: docs/monitoring.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

from prometheus_client import Gauge, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gcs_ha import __version__
from gcs_ha.consensus.api import ROLE_LEADER, Replica, ReplicaStatusInfo
from gcs_ha.errors import GcsHaError
from gcs_ha.metrics_support import PREFIX, GcPauses, exposition, new_registry
from gcs_ha.server.gcs_server import GcsServer
from gcs_ha.server.grpc_metrics import RpcMetricsInterceptor

log = logging.getLogger(__name__)

CONSENSUS_TIMEOUT_S = 2.0


class ReplicaMetrics:
    """The registry of a replica's front end, and the text of both its processes."""

    def __init__(self, replica: Replica, gcs: GcsServer) -> None:
        self._replica = replica
        self.registry = new_registry()
        self.rpc = RpcMetricsInterceptor(self.registry)
        self.registry.register(ReplicaStateCollector(replica, gcs))
        ProcessCollector(namespace=f"{PREFIX}_frontend", registry=self.registry)
        self._gc = GcPauses(self.registry, "frontend")
        self._consensus_up = Gauge(
            f"{PREFIX}_consensus_metrics_up",
            "1 when the consensus process answered this scrape with its metrics",
            registry=self.registry,
        )

    async def text(self) -> bytes:
        """Every metric of the replica, both processes."""
        consensus = await self._consensus_text()
        self._consensus_up.set(1 if consensus else 0)
        return exposition(self.registry) + consensus

    async def _consensus_text(self) -> bytes:
        try:
            return await asyncio.wait_for(self._replica.consensus_metrics(), CONSENSUS_TIMEOUT_S)
        except (GcsHaError, TimeoutError) as exc:
            log.debug("the consensus process's metrics are missing: %s", exc)
            return b""

    def close(self) -> None:
        self._gc.close()


class ReplicaStateCollector(Collector):
    """Reads the replica's state at each scrape (nothing is kept in between)."""

    def __init__(self, replica: Replica, gcs: GcsServer) -> None:
        self._replica = replica
        self._gcs = gcs

    def collect(self) -> Iterator[Metric]:
        status = self._replica.status()
        yield from self._leadership(status)
        yield from self._raft(status)
        yield from self._proposals()
        yield from self._store()

    def _leadership(self, status: ReplicaStatusInfo) -> Iterator[Metric]:
        gcs = self._gcs
        info = GaugeMetricFamily(
            f"{PREFIX}_info", "this replica (value 1)", labels=["node_id", "cluster", "version"]
        )
        info.add_metric([status.node_id, status.cluster_name, __version__], 1)
        yield info
        for name, doc, value in (
            ("server_has_leader", "1 when this replica knows a leader and hears from a "
             "majority", status.has_quorum and (
                 status.leader_raft_address is not None or status.role == ROLE_LEADER)),
            ("server_is_leader", "1 on the Raft leader", status.role == ROLE_LEADER),
            ("server_serving", "1 when this replica's GCS managers serve Ray", gcs.is_serving()),
            ("server_ready", "1 when Ray's calls are answered here (served or forwarded)",
             gcs.can_answer()),
            ("server_has_quorum", "1 when this replica hears from a majority",
             status.has_quorum),
        ):  # fmt: skip
            yield GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=float(value))
        yield CounterMetricFamily(
            f"{PREFIX}_server_leader_changes_seen",
            "leaders this replica has seen (each new leader or term)",
            value=gcs.routing.leader_history.changes_seen,
        )
        forwarded = CounterMetricFamily(
            f"{PREFIX}_server_forwarded_calls",
            "Ray calls forwarded to the leader, by method (each attempt)",
            labels=["grpc_method"],
        )
        for method, count in sorted(gcs.routing.forwarder.forwarded.items()):
            forwarded.add_metric([method.rpartition("/")[2]], count)
        yield forwarded

    def _raft(self, status: ReplicaStatusInfo) -> Iterator[Metric]:
        yield GaugeMetricFamily(f"{PREFIX}_server_term", "the Raft term", value=status.term)
        yield GaugeMetricFamily(
            f"{PREFIX}_cluster_members", "members of the Raft cluster", value=len(status.members)
        )
        yield CounterMetricFamily(
            f"{PREFIX}_server_proposals_committed",
            "the Raft commit index (entries committed)",
            value=status.commit_index,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_server_proposals_applied",
            "the applied index (entries applied to this replica's LMDB)",
            value=status.applied_index,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_raft_log_entries", "entries in the Raft log since the last snapshot",
            value=status.log_length,
        )  # fmt: skip
        lag = GaugeMetricFamily(
            f"{PREFIX}_raft_follower_lag_entries",
            "leader only: entries each follower (by Raft address) is missing",
            labels=["member"],
        )
        for address, match in sorted(status.match_index.items()):  # Raft addresses: stable
            lag.add_metric([address], max(0, status.last_log_index - match))
        yield lag

    def _proposals(self) -> Iterator[Metric]:
        counts = self._replica.proposal_counts()
        for name, doc, value in (
            ("server_proposals", "write requests proposed by this replica", counts.requests),
            ("server_proposal_entries", "log entries proposed (batches of requests)",
             counts.entries),
            ("server_proposals_failed", "write requests that failed (lost leadership, "
             "not leader, refused)", counts.failed),
        ):  # fmt: skip
            yield CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)
        yield GaugeMetricFamily(
            f"{PREFIX}_server_proposals_pending", "write requests queued or in flight",
            value=counts.pending,
        )  # fmt: skip

    def _store(self) -> Iterator[Metric]:
        try:
            use = self._replica.store_use()
        except (GcsHaError, OSError) as exc:  # not started yet, or the dir is gone
            log.debug("store use not measured: %s", exc)
            return
        for name, doc, value in (
            ("lmdb_in_use_bytes", "bytes of LMDB pages holding data", use.map_used),
            ("lmdb_map_bytes", "LMDB's map size (--map-size)", use.map_size),
            ("lmdb_map_use_ratio", "LMDB pages in use / map size (writes are refused above "
             "7/8)", use.map_used / use.map_size if use.map_size else 0.0),
            ("lmdb_file_bytes", "bytes allocated to LMDB's data file", use.data_file),
            ("disk_free_bytes", "free bytes on the data dir's file system", use.disk_free),
        ):  # fmt: skip
            yield GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)
        yield CounterMetricFamily(
            f"{PREFIX}_store_writes_refused",
            "writes refused because the store was full (RESOURCE_EXHAUSTED)",
            value=use.writes_refused,
        )
