"""The nemesis: faults injected into a local ProcessCluster, one at a time.

`inject(kind)` carries one fault out (kill-leader, kill-random, pause, partition-leader,
partition-split, powerloss, churn) and heals it before returning its `Fault` record;
`settle()` then waits until the cluster is whole again. Partitions need the relay
(gcs_ha.drill.relay); powerloss needs replicas started with GCS_HA_CRASH_SIM=1. The kinds,
their timing and the decisions are in DESIGN.md ("The nemesis").
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gcs_ha import cluster_ops
from gcs_ha.drill.faults import Fault, FaultKind
from gcs_ha.errors import ConfigError, GcsHaError, UnavailableError
from gcs_ha.proto import admin_pb2
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until
from gcs_ha.testing.powerloss import simulate_power_loss

log = logging.getLogger(__name__)


class Cluster(Protocol):
    """What the nemesis needs of a cluster: ProcessCluster (every kind), or a
    drill.remote.RemoteCluster (kills and pauses through the operator's commands)."""

    members: set[int]

    @property
    def admin_key(self) -> bytes | None: ...  # signs admin calls (gcs_ha.admin_auth)

    def node_id(self, i: int) -> str: ...
    def gcs_address(self, i: int) -> str: ...
    def status(self, i: int, timeout: float = 3.0) -> admin_pb2.ReplicaStatus: ...
    def is_running(self, i: int) -> bool: ...
    def serving_leader(self) -> int | None: ...
    def wait_for_leader(self, timeout: float = 30.0, exclude: Sequence[int] = ()) -> int: ...
    def kill(self, i: int) -> int: ...
    def restart(self, i: int, timeout: float = 10.0) -> object: ...
    def pause(self, i: int) -> None: ...
    def resume(self, i: int) -> None: ...


class Links(Protocol):
    """The Raft link controller (gcs_ha.drill.relay)."""

    def cut(self, pairs: Iterable[tuple[int, int]]) -> None: ...
    def heal(self) -> None: ...
    def env_for(self, i: int) -> str: ...  # GCS_HA_RAFT_DIAL for replica i


@dataclass(frozen=True)
class NemesisTiming:
    down_s: tuple[float, float] = (0.3, 1.5)
    pause_s: tuple[float, float] = (1.0, 2.5)
    partition_s: tuple[float, float] = (2.0, 3.5)
    settle_timeout_s: float = 60.0
    catch_up_slack: int = 50  # a follower this close to the leader's log counts as caught up


class Nemesis:
    """Faults on `cluster` (replica indices = its members)."""

    def __init__(
        self,
        cluster: Cluster,
        rng: random.Random,
        links: Links | None = None,
        timing: NemesisTiming | None = None,
        possible: Collection[FaultKind] | None = None,
    ) -> None:
        """`possible`: the kinds this cluster allows (default: all for a ProcessCluster,
        partitions only with `links`)."""
        self.cluster = cluster
        self.possible = possible
        self.rng = rng
        self.links = links
        self.timing = timing or NemesisTiming()
        self._actions: dict[FaultKind, Callable[[int], Fault]] = {
            "kill-leader": self._kill_leader,
            "kill-random": self._kill_random,
            "pause": self._pause,
            "partition-leader": self._partition_leader,
            "partition-split": self._partition_split,
            "powerloss": self._powerloss,
            "churn": self._churn,
        }

    def supports(self, kind: FaultKind) -> bool:
        if self.possible is not None:
            return kind in self.possible
        if kind.startswith("partition"):
            return self.links is not None
        return isinstance(self.cluster, ProcessCluster) or kind not in ("powerloss", "churn")

    def inject(self, kind: FaultKind) -> Fault:
        """Carry out one fault and heal it; never raises for a fault that went wrong
        (the record says what did), only for an unknown kind (ValueError)."""
        if kind not in self._actions:
            raise ValueError(f"unknown fault kind {kind!r}")
        leader = self._leader()
        start = time.monotonic()
        try:
            fault = self._actions[kind](leader)
        except GcsHaError as exc:
            log.warning("fault %s failed: %s", kind, exc)
            self._repair()
            return Fault(kind, (), start, time.monotonic(), leader, error=str(exc))
        log.info("fault %s on %s: %s", kind, fault.targets, fault.detail)
        return fault

    def settle(self) -> float:
        """Wait until a replica serves, every member runs and every follower has caught
        up with the leader's log; returns the time it took (UnavailableError after
        `settle_timeout_s`)."""
        start = time.monotonic()
        cluster = self.cluster

        def whole() -> bool | None:
            leader = cluster.serving_leader()
            if leader is None or any(not cluster.is_running(i) for i in cluster.members):
                return None
            status = cluster.status(leader)
            last = status.last_log_index
            behind = [
                addr
                for addr, match in status.match_index.items()
                if match + self.timing.catch_up_slack < last
            ]
            return True if len(status.members) == len(cluster.members) and not behind else None

        wait_until(whole, self.timing.settle_timeout_s, "the cluster did not become whole")
        return time.monotonic() - start

    # -- the faults ---------------------------------------------------------------------

    def _kill_leader(self, leader: int) -> Fault:
        return self._kill("kill-leader", leader, leader)

    def _kill_random(self, leader: int) -> Fault:
        return self._kill("kill-random", self._random_member(), leader)

    def _kill(self, kind: FaultKind, target: int, leader: int) -> Fault:
        start = time.monotonic()
        self.cluster.kill(target)
        down = self._draw(self.timing.down_s)
        time.sleep(down)
        self.cluster.restart(target)
        return Fault(
            kind, (target,), start, time.monotonic(), leader, f"r{target} down {down:.1f} s"
        )

    def _pause(self, leader: int) -> Fault:
        target = leader if self.rng.random() < 0.5 else self._random_member()
        start = time.monotonic()
        self.cluster.pause(target)
        length = self._draw(self.timing.pause_s)
        try:
            time.sleep(length)
        finally:
            self.cluster.resume(target)
        return Fault(
            "pause", (target,), start, time.monotonic(), leader, f"r{target} paused {length:.1f} s"
        )

    def _partition_leader(self, leader: int) -> Fault:
        return self._cut("partition-leader", [leader], leader)

    def _partition_split(self, leader: int) -> Fault:
        members = sorted(self.cluster.members)
        minority = self.rng.sample(members, max(1, (len(members) - 1) // 2))
        return self._cut("partition-split", minority, leader)

    def _cut(self, kind: FaultKind, side: list[int], leader: int) -> Fault:
        if self.links is None:
            raise UnavailableError("partitions need the Raft link relay")
        rest = [i for i in sorted(self.cluster.members) if i not in side]
        start = time.monotonic()
        self.links.cut((a, b) for a in side for b in rest)
        length = self._draw(self.timing.partition_s)
        try:
            time.sleep(length)
        finally:
            self.links.heal()
        names = ",".join(f"r{i}" for i in side)
        detail = f"{names} cut off {length:.1f} s"
        return Fault(kind, tuple(side), start, time.monotonic(), leader, detail)

    def _powerloss(self, leader: int) -> Fault:
        cluster = self._local()
        target = leader if self.rng.random() < 0.5 else self._random_member()
        start = time.monotonic()
        cluster.kill(target)
        loss = simulate_power_loss(cluster.data_dir(target))
        cluster.restart(target)
        detail = (
            f"r{target}: {loss.journal.log_bytes_dropped} unsynced journal bytes dropped"
            + (", LMDB lost (rebuilt from snapshot and journal)" if loss.lmdb_damaged else "")
        )
        return Fault("powerloss", (target,), start, time.monotonic(), leader, detail)

    def _churn(self, leader: int) -> Fault:
        cluster = self._local()
        followers = [i for i in sorted(cluster.members) if i != leader]
        target = self.rng.choice(followers)
        via = next(i for i in sorted(cluster.members) if i != target)
        start = time.monotonic()
        cluster_ops.leave(cluster.gcs_address(via), cluster.node_id(target), cluster.admin_key)
        proc = cluster.process(target)
        if proc is not None:
            wait_until(lambda: proc.poll() is not None or None, 20.0, f"r{target} did not stop")
        cluster.members.discard(target)
        cluster.rejoin(target, via)
        cluster.wait_for_members(len(cluster.members), via, self.timing.settle_timeout_s)
        detail = f"r{target} left and joined again"
        return Fault("churn", (target,), start, time.monotonic(), leader, detail)

    # -- helpers ------------------------------------------------------------------------

    def _local(self) -> ProcessCluster:
        if not isinstance(self.cluster, ProcessCluster):
            raise ConfigError("power loss and churn need a local cluster")
        return self.cluster

    def _leader(self) -> int:
        try:
            return self.cluster.wait_for_leader(timeout=self.timing.settle_timeout_s)
        except UnavailableError:
            return -1

    def _random_member(self) -> int:
        return self.rng.choice(sorted(self.cluster.members))

    def _draw(self, bounds: tuple[float, float]) -> float:
        return self.rng.uniform(*bounds)

    def _repair(self) -> None:
        """After a fault that went wrong: links healed, every member running."""
        if self.links is not None:
            self.links.heal()
        for i in sorted(self.cluster.members):
            try:
                if not self.cluster.is_running(i):
                    self.cluster.restart(i)
                elif isinstance(self.cluster, ProcessCluster):
                    self.cluster.resume(i)
            except GcsHaError as exc:
                log.warning("could not repair r%d after a failed fault: %s", i, exc)
