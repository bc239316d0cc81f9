"""Each replica's HTTP listener, as a monitoring system uses it: probes, the leader, and
Prometheus metrics from both of a replica's processes, through a leader's death and a
lost quorum. Every metric docs/monitoring.md names is checked against a live scrape.
Ports: gRPC 127.0.0.1:14300-14302, Raft 14310-14312, HTTP 14320-14322.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gcs_ha.testing import kv_calls
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until

pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parents[2] / "docs" / "monitoring.md"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def fetch(cluster: ProcessCluster, i: int, path: str) -> tuple[int, bytes]:
    url = f"http://{cluster.http_address(i)}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def scrape(cluster: ProcessCluster, i: int) -> Samples:
    code, body = fetch(cluster, i, "/metrics")
    assert code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def documented_metrics() -> set[str]:
    text = DOCS.read_text()
    section = text[text.index("\n## Metrics") + 1 :]
    section = section.split("\n## ", 1)[0]
    return {name for name in re.findall(r"`(gcs_ha_[a-z_]+)", section) if not name.endswith("_")}


def test_probes_leader_and_metrics_follow_the_cluster(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path, 14300, 14310, http_port=14320) as cluster:
        cluster.start()
        leader = cluster.wait_for_leader(30)
        follower = next(i for i in range(3) if i != leader)
        for i in range(3):
            wait_until(lambda i=i: fetch(cluster, i, "/readyz")[0] == 200 or None, 30, "not ready")
            assert fetch(cluster, i, "/livez") == (200, b"ok\n")
            doc = json.loads(fetch(cluster, i, "/leader")[1])
            assert doc["leader"] == cluster.node_id(leader)
            assert doc["gcs_address"] == cluster.gcs_address(leader)
        assert fetch(cluster, leader, "/nothing-here")[0] == 404

        # A put sent to a follower is forwarded to the leader, and both count it.
        code, _ = kv_calls.put(cluster.gcs_address(follower), b"m", b"k", b"v", retry_s=10)
        assert code is grpc.StatusCode.OK
        on_follower, on_leader = scrape(cluster, follower), scrape(cluster, leader)
        put = {"grpc_service": "ray.rpc.InternalKVGcsService", "grpc_method": "InternalKVPut"}
        for samples in (on_follower, on_leader):
            assert value(samples, "gcs_ha_grpc_server_handled_total", **put, grpc_code="OK") >= 1
        forwarded = "gcs_ha_server_forwarded_calls_total"
        assert value(on_follower, forwarded, grpc_method="InternalKVPut") >= 1
        assert value(on_leader, "gcs_ha_server_is_leader") == 1
        assert value(on_follower, "gcs_ha_server_is_leader") == 0
        assert value(on_leader, "gcs_ha_disk_wal_fsync_duration_seconds_count") >= 1
        assert value(on_follower, "gcs_ha_server_apply_duration_seconds_count") >= 1
        assert value(on_leader, "gcs_ha_server_proposals_total") >= 1
        assert value(on_leader, "gcs_ha_consensus_metrics_up") == 1
        lagging = {dict(labels)["member"] for (name, labels) in on_leader
                   if name == "gcs_ha_raft_follower_lag_entries"}  # fmt: skip
        assert lagging == {cluster.raft_address(i) for i in range(3) if i != leader}

        families = list(
            text_string_to_metric_families(fetch(cluster, leader, "/metrics")[1].decode())
        )
        names = {f.name for f in families} | {
            f"{f.name}_total" for f in families if f.type == "counter"
        }
        missing = sorted(m for m in documented_metrics() if m not in names)
        assert not missing, f"documented in docs/monitoring.md, not served: {missing}"

        # The leader dies: the survivors see a new leader and count the change.
        seen_before = value(on_follower, "gcs_ha_server_leader_changes_seen_total")
        cluster.kill(leader)
        new = cluster.wait_for_leader(30, exclude=[leader])
        survivor = next(i for i in range(3) if i not in (leader, new))
        wait_until(
            lambda: (
                json.loads(fetch(cluster, survivor, "/leader")[1])["leader"] == cluster.node_id(new)
                or None
            ),
            30,
            "the survivor did not see the new leader",
        )
        after = scrape(cluster, survivor)
        assert value(after, "gcs_ha_server_leader_changes_seen_total") > seen_before

        # Quorum lost: the last replica is alive but not ready, and knows no leader.
        cluster.kill(new)
        wait_until(lambda: fetch(cluster, survivor, "/readyz")[0] == 503 or None, 30, "ready")
        assert fetch(cluster, survivor, "/livez")[0] == 200
        assert fetch(cluster, survivor, "/leader")[0] == 503
        alone = scrape(cluster, survivor)
        assert value(alone, "gcs_ha_server_has_leader") == 0
        assert value(alone, "gcs_ha_server_ready") == 0
        status = json.loads(fetch(cluster, survivor, "/status")[1])
        assert status["ready"] is False
        assert [c["leader"] for c in status["leader_changes"]][-1] is None
