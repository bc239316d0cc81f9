"""Replicas named as Kubernetes names StatefulSet pods (deploy/kubernetes/statefulset.yaml).

Each replica listens on 0.0.0.0 for gRPC and announces a DNS name of its own,
gcs-ha-<i>.gcs-ha-peers.<namespace>.svc.cluster.local, for gRPC and for Raft; its Raft
port binds that name (pysyncobj resolves it and binds the IP). In a pod the kubelet
writes the pod's own name into /etc/hosts; here a private /etc/hosts (a mount namespace)
maps the three names to 127.0.1.10-12, inside a network namespace of its own (so that
0.0.0.0 reaches nothing else). Checked: a cluster forms and serves through every name;
0.0.0.0 is really bound; and a replica that comes back on another IP, as a rescheduled
pod does, is reached again by its peers (they re-resolve its name) and catches up.
Needs root, `unshare` and `ip` (else skipped). Ports 14400-14410, in the namespace.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import grpc
import pytest

from gcs_ha.processes import Process, replica_command
from gcs_ha.testing import kv_calls, namespaces
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until

INSIDE = "GCS_HA_POD_NAMES_INSIDE"
GCS_PORT = 14400  # replica i: gRPC on 0.0.0.0:14400+i
RAFT_PORT = 14410  # every replica's Raft port, each on its own name's IP, as in pods
IPS = {0: "127.0.1.10", 1: "127.0.1.11", 2: "127.0.1.12"}
MOVED_IP = "127.0.1.20"
KV_NS = b"deploy-names"


def pod_name(i: int) -> str:
    return f"gcs-ha-{i}.gcs-ha-peers.test.svc.cluster.local"


class PodNamedCluster(ProcessCluster):
    """ProcessCluster whose replicas are known by pod-like DNS names and listen on
    0.0.0.0 for gRPC (--listen), as in deploy/kubernetes/statefulset.yaml."""

    def gcs_address(self, i: int) -> str:
        return f"{pod_name(i)}:{GCS_PORT + i}"

    def raft_address(self, i: int) -> str:
        return f"{pod_name(i)}:{RAFT_PORT}"

    def _start_one(self, i: int) -> Process:
        cmd = replica_command(
            node_id=f"gcs-ha-{i}",
            data_dir=self.data_dir(i),
            raft_address=self.raft_address(i),
            gcs_address=self.gcs_address(i),
            peers=[self.raft_address(j) for j in range(self.size)],  # its own included
            cluster_name=self.cluster_name,
            secret_file=self.secret_file,
            extra=[f"--listen=0.0.0.0:{GCS_PORT + i}"],
        )
        return self._spawn(i, cmd)


def write_hosts(path: Path, ips: dict[int, str]) -> None:
    """Rewrite `path` in place (it is bind-mounted on /etc/hosts: same inode)."""
    lines = ["127.0.0.1 localhost"] + [f"{ip} {pod_name(i)}" for i, ip in ips.items()]
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")


def put_ok(address: str, key: bytes) -> None:
    code, details = kv_calls.put(address, KV_NS, key, b"v", timeout_s=5, retry_s=20)
    assert code is grpc.StatusCode.OK, f"put through {address}: {code} {details}"


def test_pod_names_inside(tmp_path: Path) -> None:
    if not os.environ.get(INSIDE):
        pytest.skip("runs in namespaces of its own (test_pod_names)")
    hosts = tmp_path / "hosts"
    write_hosts(hosts, IPS)
    subprocess.run(["mount", "--bind", str(hosts), "/etc/hosts"], check=True)
    with PodNamedCluster(3, tmp_path / "cluster", GCS_PORT, RAFT_PORT) as cluster:
        cluster.start()
        leader = cluster.wait_for_leader(timeout=30)
        status = cluster.status(leader)
        assert sorted(m.raft_address for m in status.members) == [
            cluster.raft_address(i) for i in range(3)
        ]
        for i in range(3):  # the leader answers, followers forward (to its name)
            put_ok(cluster.gcs_address(i), f"k{i}".encode())
        put_ok(f"127.0.0.1:{GCS_PORT + 1}", b"any-address")  # --listen 0.0.0.0

        # Replica gcs-ha-0 comes back on another IP, as a pod rescheduled elsewhere.
        # Its peers dial it (pysyncobj: the higher address dials the lower), so they
        # must look its name up again to reach it.
        cluster.kill(0)
        write_hosts(hosts, {**IPS, 0: MOVED_IP})
        cluster.start(0)
        put_ok(cluster.gcs_address(1), b"after-move")
        leader = cluster.wait_for_leader(timeout=30)
        committed = cluster.status(leader).commit_index

        def caught_up() -> bool | None:
            try:
                return cluster.status(0, timeout=1.0).applied_index >= committed or None
            except Exception:
                return None

        wait_until(caught_up, 30, "gcs-ha-0 on its new IP did not catch up")
        assert kv_calls.get(cluster.gcs_address(0), KV_NS, b"after-move") == b"v"


@pytest.mark.slow
def test_pod_names(tmp_path: Path) -> None:
    if os.environ.get(INSIDE):
        pytest.skip("already inside")
    if (why := namespaces.missing()) is not None:
        pytest.skip(why)
    inner = f"{Path(__file__)}::test_pod_names_inside"
    proc = namespaces.run_test_inside(inner, INSIDE, tmp_path / "inner", mount=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout, proc.stdout[-3000:]
