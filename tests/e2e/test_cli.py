"""The gcs-ha CLI end to end: real `gcs-ha` processes, real replicas, signals by PID.

Fast tests check that user mistakes end with one line and a non-zero exit. The slow
ones run clusters: `gcs-ha up` (kill -9 of the leader, restart by running `up` again,
SIGTERM and Ctrl-C), join and leave, pause of the leader, the health service.
Ports: gRPC 127.0.0.1:22000-22999, Raft 127.0.0.1:24000-24999 (a block of 10 per test).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gcs_ha.admin_client import AdminClient
from gcs_ha.cluster_ops import gather_status
from gcs_ha.cluster_view import ClusterView
from gcs_ha.datadir import DataDir
from gcs_ha.errors import ConfigError, GcsHaError
from gcs_ha.processes import terminate_all
from gcs_ha.ray_head import ray_address
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until

GCS_HA = [sys.executable, "-m", "gcs_ha.cli"]
_blocks = itertools.count(int(os.environ.get("GCS_HA_E2E_PORT_BLOCK", "0")))


@pytest.fixture
def ports() -> tuple[int, int]:
    """(gRPC base port, Raft base port) of a block of 10 ports not used by other tests."""
    block = next(_blocks) % 100
    return 22000 + 10 * block, 24000 + 10 * block


def run_cli(
    *args: str, timeout: float = 60.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "GCS_HA_SECRET"}
    full_env.update(env or {})
    return subprocess.run(
        [*GCS_HA, *args], check=False, capture_output=True, text=True, timeout=timeout, env=full_env
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ")
    assert text in last


def start_args(tmp_path: Path, ports: tuple[int, int], node: str = "r0") -> list[str]:
    return [
        "start",
        f"--node-id={node}",
        f"--data-dir={tmp_path / node}",
        f"--raft-address=127.0.0.1:{ports[1]}",
        f"--gcs-address=127.0.0.1:{ports[0]}",
    ]


# -- user mistakes -----------------------------------------------------------------------


def test_missing_option(tmp_path: Path) -> None:
    result = run_cli("start", "--node-id=r0")
    assert_one_line_error(result, 2, "Missing option '--data-dir'")


def test_bad_address(tmp_path: Path, ports: tuple[int, int]) -> None:
    args = start_args(tmp_path, ports)
    args[3] = "--raft-address=127.0.0.1"
    assert_one_line_error(run_cli(*args), 2, "bad address '127.0.0.1': expected HOST:PORT")


def test_bad_node_id(tmp_path: Path, ports: tuple[int, int]) -> None:
    args = start_args(tmp_path, ports, node="r/0")
    assert_one_line_error(run_cli(*args), 2, "bad node id 'r/0'")


def test_leave_needs_a_member_named() -> None:
    result = run_cli("leave", "--address=127.0.0.1:1")
    assert_one_line_error(result, 2, "name the member to remove: --node-id or --raft-address")
    result = run_cli("leave", "--address=127.0.0.1:1", "--raft-address=nowhere")
    assert_one_line_error(result, 2, "bad address 'nowhere'")


def test_several_replicas_without_secret(tmp_path: Path, ports: tuple[int, int]) -> None:
    result = run_cli(*start_args(tmp_path, ports), f"--peer=127.0.0.1:{ports[1] + 1}")
    assert_one_line_error(result, 2, "a cluster of several replicas needs a secret")
    assert not (tmp_path / "r0").exists()


def test_insecure_refused_off_loopback(tmp_path: Path, ports: tuple[int, int]) -> None:
    result = run_cli(*start_args(tmp_path, ports), "--peer=10.1.2.3:7000", "--insecure")
    assert_one_line_error(
        result, 2, "--insecure is only allowed when every Raft address is loopback"
    )


def test_short_secret_from_environment(tmp_path: Path, ports: tuple[int, int]) -> None:
    result = run_cli(
        *start_args(tmp_path, ports),
        f"--peer=127.0.0.1:{ports[1] + 1}",
        env={"GCS_HA_SECRET": "abc"},
    )
    assert_one_line_error(result, 2, "$GCS_HA_SECRET is too short")


def test_missing_secret_file(tmp_path: Path, ports: tuple[int, int]) -> None:
    result = run_cli(*start_args(tmp_path, ports), f"--secret-file={tmp_path / 'nope'}")
    assert_one_line_error(result, 2, "cannot read secret file")


def test_data_dir_of_another_node(tmp_path: Path, ports: tuple[int, int]) -> None:
    DataDir.open(tmp_path / "r0", "r7", "gcs-ha").close()
    result = run_cli(*start_args(tmp_path, ports))
    assert_one_line_error(result, 1, "belongs to node 'r7', not 'r0'")


def test_data_dir_of_another_cluster(tmp_path: Path, ports: tuple[int, int]) -> None:
    DataDir.open(tmp_path / "r0", "r0", "other").close()
    result = run_cli(*start_args(tmp_path, ports), "--cluster-name=mine")
    assert_one_line_error(result, 1, "belongs to cluster 'other', not 'mine'")


def test_data_dir_in_use(tmp_path: Path, ports: tuple[int, int]) -> None:
    with DataDir.open(tmp_path / "r0", "r0", "gcs-ha"):
        result = run_cli(*start_args(tmp_path, ports))
    assert_one_line_error(result, 1, f"in use by another gcs-ha process (pid {os.getpid()})")


def test_gcs_port_in_use(tmp_path: Path, ports: tuple[int, int]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports[0]))
        busy.listen()
        result = run_cli(*start_args(tmp_path, ports))
    expected = f"cannot listen on 127.0.0.1:{ports[0]} (--listen, else --gcs-address)"
    assert_one_line_error(result, 2, expected)


def test_raft_port_in_use(tmp_path: Path, ports: tuple[int, int]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports[1]))
        busy.listen()
        result = run_cli(*start_args(tmp_path, ports), "--insecure")
    assert_one_line_error(result, 2, f"cannot listen on --raft-address 127.0.0.1:{ports[1]}")


def test_status_of_unreachable_address(ports: tuple[int, int]) -> None:
    result = run_cli("status", f"--address=127.0.0.1:{ports[0]}", "--timeout=2")
    assert_one_line_error(result, 1, f"cannot reach 127.0.0.1:{ports[0]}")


def test_join_unreachable_cluster(tmp_path: Path, ports: tuple[int, int]) -> None:
    result = run_cli(
        "join",
        f"--address=127.0.0.1:{ports[0]}",
        "--node-id=r3",
        f"--data-dir={tmp_path / 'r3'}",
        f"--raft-address=127.0.0.1:{ports[1] + 3}",
        f"--gcs-address=127.0.0.1:{ports[0] + 3}",
        "--insecure",
    )
    assert_one_line_error(result, 1, "cannot reach")


def test_up_with_overlapping_ports(tmp_path: Path) -> None:
    result = run_cli(
        "up", f"--data-dir={tmp_path}", "--replicas=3", "--port=22000", "--raft-port=22001"
    )
    assert_one_line_error(result, 2, "ranges overlap")


def test_bench_group_exists() -> None:
    result = run_cli("bench", "--help")
    assert result.returncode == 0
    assert "Benchmarks" in result.stdout


# -- gcs-ha up -----------------------------------------------------------------------------


class Up:
    """A `gcs-ha up` supervisor process with its output in a file."""

    def __init__(self, data_dir: Path, ports: tuple[int, int], replicas: int | None = 3) -> None:
        self.data_dir = data_dir
        self.ports = ports
        self.out = data_dir.parent / f"up-{time.monotonic_ns()}.out"
        args = ["up", f"--data-dir={data_dir}", f"--port={ports[0]}", f"--raft-port={ports[1]}"]
        args.append("--host=127.0.0.1")  # tests stay on loopback (the default: test_newcomer)
        if replicas is not None:
            args.append(f"--replicas={replicas}")
        with open(self.out, "w") as out:
            self.proc = subprocess.Popen(
                [*GCS_HA, *args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def output(self) -> str:
        return self.out.read_text()

    def wait_output(self, text: str, timeout: float = 60.0) -> None:
        wait_until(
            lambda: True if text in self.output() else None, timeout, f"no {text!r} in output"
        )

    def replica_pid(self, node: str) -> int:
        return int((self.data_dir / node / "lock").read_text().strip())

    def view(self, timeout: float = 60.0, want_reachable: int = 3) -> ClusterView:
        def probe() -> ClusterView | None:
            for i in range(3):  # ask any replica that answers
                try:
                    view = gather_status(f"127.0.0.1:{self.ports[0] + i}", timeout=1.0)
                except GcsHaError:
                    continue
                reachable = sum(m.reachable for m in view.members)
                ready = view.leader_reachable() and reachable == want_reachable
                return view if ready else None
            return None

        return wait_until(probe, timeout, "cluster not ready")

    def kill(self) -> None:
        terminate_all([self.proc], 20.0)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def up_dir(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "data"
    yield data_dir
    # Whatever happened, no replica of this test may outlive it.
    for lock in data_dir.glob("r*/lock"):
        text = lock.read_text().strip()
        if text and pid_alive(int(text)):
            os.kill(int(text), signal.SIGKILL)


@pytest.mark.slow
def test_up_kill_leader_restart_and_stop(up_dir: Path, ports: tuple[int, int]) -> None:
    up = Up(up_dir, ports)
    try:
        view = up.view()
        assert [m.id for m in view.members] == ["r0", "r1", "r2"]
        assert sum(m.role == "leader" for m in view.members) == 1
        assert (up_dir / "cluster.secret").stat().st_mode & 0o777 == 0o600
        up.wait_output(f"leader: {view.leader} (gRPC 127.0.0.1:")

        table = run_cli("status", f"--address=127.0.0.1:{ports[0] + 1}")
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].split()[:3] == ["ID", "ROLE", "TERM"]
        assert len(lines) == 6
        assert lines[-2].startswith(f"leader: {view.leader} (127.0.0.1:")
        assert lines[-1] == "cluster version: 1"

        old = view.leader
        assert old is not None
        os.kill(up.replica_pid(old), signal.SIGKILL)
        up.wait_output(f"{old} was killed by SIGKILL")
        after = up.view(want_reachable=2)
        assert after.leader not in (None, old)
        dead = next(m for m in after.members if m.id == old)
        assert not dead.reachable
        up.wait_output(f"leader: {after.leader} (gRPC 127.0.0.1:")

        again = run_cli("up", f"--data-dir={up_dir}")
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout
        up.wait_output(f"{old}: pid")
        up.view(want_reachable=3)

        last_term = max(m.term or 0 for m in up.view().members)
        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(30) == 0
        assert "cluster stopped" in up.output()
        assert not any(pid_alive(up.replica_pid(f"r{i}")) for i in range(3))
    finally:
        up.kill()

    wrong = run_cli("up", f"--data-dir={up_dir}", "--replicas=5")
    assert_one_line_error(wrong, 2, "made with --replicas 3, not 5")

    second = Up(up_dir, ports, replicas=None)  # the same cluster, restarted with its data
    try:
        view = second.view()
        assert [m.id for m in view.members] == ["r0", "r1", "r2"]
        assert max(m.term or 0 for m in view.members) > last_term  # the Raft state was kept
        second.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert second.proc.wait(30) == 0
    finally:
        second.kill()

    third = Up(up_dir, ports)
    try:
        third.view()
        pids = [third.replica_pid(f"r{i}") for i in range(3)]
        os.kill(third.proc.pid, signal.SIGKILL)  # the supervisor dies: its replicas stop
        wait_until(lambda: not any(map(pid_alive, pids)) or None, 30, "replicas outlived up")
    finally:
        third.kill()


# -- the harness, join and leave ------------------------------------------------------------


def health_of(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=3).status  # type: ignore[no-any-return]


@pytest.mark.slow
def test_status_json_health_join_and_leave(tmp_path: Path, ports: tuple[int, int]) -> None:
    with ProcessCluster(3, tmp_path, ports[0], ports[1]) as cluster:
        cluster.start()
        leader = cluster.wait_for_leader(timeout=60)
        for i in range(3):
            cluster.wait_for_members(3, i)

        result = run_cli("status", f"--address={cluster.gcs_address(0)}", "--json")
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        assert doc["leader"] == cluster.node_id(leader)
        assert doc["cluster_version"] == 1
        assert [m["id"] for m in doc["members"]] == ["r0", "r1", "r2"]
        keys = {"id", "role", "term", "commit_index", "applied_index", "lag", "gcs_address",
                "raft_address", "serving", "reachable", "entry_version"}  # fmt: skip
        assert all(set(m) == keys for m in doc["members"])
        assert [m["serving"] for m in doc["members"]] == [i == leader for i in range(3)]

        serving = health_pb2.HealthCheckResponse.SERVING
        assert health_of(cluster.gcs_address(leader)) == serving
        assert health_of(cluster.gcs_address((leader + 1) % 3)) != serving

        new = cluster.join_replica(via=(leader + 1) % 3)  # a follower: AddMember follows the hint
        assert cluster.wait_for_members(4, leader, timeout=60) == ["r0", "r1", "r2", "r3"]

        def caught_up() -> bool | None:
            target = cluster.status(leader).commit_index
            return cluster.status(new).applied_index >= target or None

        wait_until(caught_up, 60, "the joined replica did not catch up")

        def same_index_digests() -> set[str] | None:
            digests = [cluster.digest(i) for i in sorted(cluster.members)]
            return {d for _, d in digests} if len({a for a, _ in digests}) == 1 else None

        assert len(wait_until(same_index_digests, 30, "replicas did not settle")) == 1
        with cluster.admin(leader) as admin:
            assert admin.compact() > 0

        leader_id = cluster.node_id(leader)
        leave = ("leave", f"--address={cluster.gcs_address(new)}", f"--node-id={leader_id}")
        refused = run_cli(*leave)  # without the secret: nothing happens
        assert refused.returncode == 1
        assert "needs the cluster secret" in refused.stderr
        assert cluster.wait_for_members(4, leader) == ["r0", "r1", "r2", "r3"]
        result = run_cli(*leave, f"--secret-file={cluster.secret_file}")
        assert result.returncode == 0, result.stderr
        assert f"removed {leader_id} and shut it down" in result.stdout
        cluster.members.discard(leader)
        process = cluster.process(leader)
        assert process is not None
        assert process.wait(30) == 0
        remaining = sorted(cluster.members)
        assert cluster.wait_for_members(3, remaining[0]) == sorted(
            cluster.node_id(i) for i in remaining
        )
        assert cluster.wait_for_leader(timeout=60) != leader

        # A dead member leaves too: the two others are a majority of the two.
        now = cluster.wait_for_leader(timeout=60)
        dead = next(i for i in remaining if i != now)
        cluster.kill(dead)
        dead_id = cluster.node_id(dead)
        result = run_cli(
            "leave", f"--address={cluster.gcs_address(now)}", f"--node-id={dead_id}",
            f"--secret-file={cluster.secret_file}",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert f"removed {dead_id}; it did not take the shutdown request" in result.stdout
        cluster.members.discard(dead)
        names = sorted(cluster.node_id(i) for i in cluster.members)
        assert cluster.wait_for_members(2, now) == names


def consensus_pid(front_end: int, timeout: float = 30.0) -> int:
    """The pid of the consensus process of the replica whose front end is `front_end`."""

    def child() -> int | None:
        with open(f"/proc/{front_end}/task/{front_end}/children") as f:
            pids = [int(p) for p in f.read().split()]
        return pids[0] if pids else None

    return wait_until(child, timeout, "the replica has no consensus process")


def gone(pid: int) -> bool | None:
    """True once `pid` has exited (a zombie counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z" or None
    except FileNotFoundError:
        return True


@pytest.mark.slow
def test_a_replicas_two_processes_live_and_die_together(
    tmp_path: Path, ports: tuple[int, int]
) -> None:
    """kill -9 of the consensus process stops the front end (exit 75, for a supervisor to
    restart the replica whole); kill -9 of the front end takes the consensus process along."""
    with ProcessCluster(1, tmp_path, ports[0], ports[1]) as cluster:
        cluster.start()
        cluster.wait_for_leader(timeout=60)
        front = cluster.process(0)
        assert front is not None
        os.kill(consensus_pid(front.pid), signal.SIGKILL)
        assert front.wait(timeout=30) == 75
        log = cluster.log_path(0).read_text()
        assert "the consensus process is gone (exit code -9)" in log

        front = cluster.restart(0)
        cluster.wait_for_leader(timeout=60)
        child = consensus_pid(front.pid)
        os.kill(front.pid, signal.SIGKILL)  # the front end alone, not its process group
        front.wait(timeout=30)
        wait_until(lambda: gone(child), 10, "the consensus process outlived its front end")

        cluster.restart(0)  # binds the same ports and opens the same LMDB again
        cluster.wait_for_leader(timeout=60)


@pytest.mark.slow
def test_pause_leader_then_resume(tmp_path: Path, ports: tuple[int, int]) -> None:
    with ProcessCluster(3, tmp_path, ports[0], ports[1]) as cluster:
        cluster.start()
        old = cluster.wait_for_leader(timeout=60)
        cluster.pause(old)
        new = cluster.wait_for_leader(timeout=60)
        assert new != old
        cluster.resume(old)

        def demoted() -> bool | None:
            return (not cluster.status(old).serving) or None

        wait_until(demoted, 30, "the resumed old leader still serves")
        assert cluster.stop(old) == 0  # SIGTERM: a clean exit
        assert cluster.kill(new) == -signal.SIGKILL
        cluster.restart(old)
        cluster.wait_for_leader(timeout=60)


def test_listen_on_every_interface_and_advertise_one(
    tmp_path: Path, ports: tuple[int, int]
) -> None:
    """--listen 0.0.0.0:P with --gcs-address 127.0.0.12:P: the replica answers at the
    advertised address and announces it; `gcs-ha ray-head` follows Ray's rewrite of
    127.0.0.1 to the machine's IP (here pretended to be 127.0.0.12) and says clearly when
    nothing answers where Ray would dial."""
    advertised = f"127.0.0.12:{ports[0]}"
    args = start_args(tmp_path, ports)
    args[4] = f"--gcs-address={advertised}"
    cmd = [*GCS_HA, *args, f"--listen=0.0.0.0:{ports[0]}", "--insecure"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def serving() -> str | None:
            try:
                with AdminClient(advertised, 2.0) as client:
                    status = client.status()
            except GcsHaError:
                return None
            return status.gcs_address if status.serving else None

        assert wait_until(serving, 60, "the replica did not serve") == advertised
        assert ray_address(f"127.0.0.1:{ports[0]}", node_ip="127.0.0.12") == advertised
        assert ray_address(f"localhost:{ports[0]}", node_ip="127.0.0.12") == advertised
        with pytest.raises(ConfigError, match=r"Ray rewrites 127\.0\.0\.1:\d+ to 127\.0\.0\.13"):
            ray_address(f"127.0.0.1:{ports[0] + 5}", node_ip="127.0.0.13")
    finally:
        terminate_all([proc], 10.0)


@pytest.mark.slow
def test_transfer_leader_and_status_exit_codes(tmp_path: Path, ports: tuple[int, int]) -> None:
    """`transfer-leader --to` moves leadership there (with the secret; without it,
    refused); `status` exits 0 healthy, 4 with a member down, 3 without a leader."""
    with ProcessCluster(3, tmp_path, ports[0], ports[1]) as cluster:
        cluster.start()
        leader = cluster.wait_for_leader(timeout=60)
        for i in range(3):
            cluster.wait_for_members(3, i)
        address = f"--address={cluster.gcs_address(leader)}"
        assert run_cli("status", address).returncode == 0

        target = (leader + 1) % 3
        unsigned = run_cli("transfer-leader", address, f"--to={cluster.node_id(target)}")
        assert unsigned.returncode == 1 and "secret" in unsigned.stderr
        moved = run_cli(
            "transfer-leader", address, f"--to={cluster.node_id(target)}",
            f"--secret-file={cluster.secret_file}",
        )  # fmt: skip
        assert moved.returncode == 0, moved.stderr
        assert moved.stdout.strip() == f"leader: {cluster.node_id(target)}"
        assert cluster.wait_for_leader(timeout=30) == target

        others = [i for i in range(3) if i != target]
        cluster.kill(others[0])
        degraded = run_cli("status", f"--address={cluster.gcs_address(target)}", "--timeout=1")
        assert degraded.returncode == 4, degraded.stdout
        cluster.kill(others[1])

        def leaderless() -> bool | None:
            got = run_cli("status", f"--address={cluster.gcs_address(target)}", "--timeout=1")
            return got.returncode == 3 or None

        wait_until(leaderless, 30, "status never reported the lost quorum")
