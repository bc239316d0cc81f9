"""A drill on a local cluster: start it, load it, fault it, check everything.

    result = run_local(DrillConfig(faults=10, seed=7), steps=WorkProgress(...))
    print(report.summary_text(result))

Steps: start the replicas (secure, through the relay when partitions are asked for,
GCS_HA_CRASH_SIM=1); start the load; `faults` times (or until `duration_s`) inject a
random fault, settle, let the load run `quiet_s` more; stop the load, read every key back,
compare digests, check the history. Every process is stopped by PID at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gcs_ha.consensus._pysyncobj import RAFT_DIAL_ENV
from gcs_ha.consensus.journal import CRASH_SIM_ENV
from gcs_ha.drill import checks
from gcs_ha.drill.faults import FAULT_KINDS, Fault, FaultKind
from gcs_ha.drill.nemesis import Cluster, Links, Nemesis, NemesisTiming
from gcs_ha.drill.partitions import RaftLinkRelay
from gcs_ha.drill.remote import FaultCommands, RemoteCluster
from gcs_ha.drill.result import DrillResult
from gcs_ha.drill.workload import DrillLoad, WorkloadConfig, final_reads
from gcs_ha.errors import ConfigError, GcsHaError
from gcs_ha.progress import QUIET, Steps
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.kvload import BackgroundLoad
from gcs_ha.unsafe import UNSAFE_FOLLOWER_READS_ENV

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrillConfig:
    replicas: int = 3
    faults: int = 10  # how many faults (with duration_s: at most this many, 0 = no limit)
    duration_s: float | None = None  # stop injecting faults after this long
    kinds: tuple[FaultKind, ...] = FAULT_KINDS
    clients: int = 8
    keys: int = 8
    ops_per_key: int = 200
    seed: int = 0
    host: str = "127.0.0.1"
    base_port: int = 36000  # gRPC base_port+i, Raft base_port+100+i, relay base_port+200+
    work_dir: Path | None = None  # default: a temporary directory
    keep: bool = False  # keep the work dir (logs, data) after the drill
    quiet_s: float = 1.0  # load without faults between two faults
    warmup_acks: int = 50
    unsafe_follower_reads: bool = False  # tests only: makes reads non-linearizable
    address: str | None = None  # drill a running cluster (drill.remote) instead
    commands: FaultCommands = field(default_factory=FaultCommands)
    admin_key: bytes | None = None  # with address: signs the admin calls (Digest)

    def validate(self) -> None:
        if self.address is not None:
            self.commands.validate()
            if self.duration_s is None:
                raise ConfigError("a drill of a running cluster (--address) needs --duration")
        elif self.replicas < 3 and self.faults:
            raise ConfigError("faults need at least 3 replicas (a majority must survive)")
        if self.clients < 1 or self.keys < 1 or self.ops_per_key < 1:
            raise ConfigError("--clients, --keys and --ops-per-key must be at least 1")
        if not self.kinds:
            raise ConfigError("no fault kinds given")
        bad = [k for k in self.kinds if k not in FAULT_KINDS]
        if bad:
            raise ConfigError(f"unknown fault kinds {bad}; known: {', '.join(FAULT_KINDS)}")
        if self.faults == 0 and self.duration_s is None:
            raise ConfigError("--faults 0 (no limit) needs --duration")
        if self.faults < 0 or (self.duration_s is not None and self.duration_s <= 0):
            raise ConfigError("--faults and --duration must be positive")


def run(config: DrillConfig, steps: Steps = QUIET) -> DrillResult:
    """A drill on a cluster of its own, or on the running cluster at `config.address`.
    `steps` hears of each fault (a unit, or with `duration_s` the seconds it took)."""
    config.validate()
    if config.address is None:
        return run_local(config, steps)
    cluster = RemoteCluster(config.address, config.commands, config.admin_key)
    names = ", ".join(cluster.node_id(i) for i in sorted(cluster.members))
    steps.note(f"drilling the cluster at {config.address}: {names}")
    namespace = b"gcs-ha-drill-%d" % time.time_ns()  # a fresh key space for this run
    return _drill(config, cluster, None, steps, namespace, config.commands.kinds())


def run_local(config: DrillConfig, steps: Steps = QUIET) -> DrillResult:
    """Run a whole drill on a cluster of its own (see the module docstring)."""
    config.validate()
    with _work_dir(config) as work, contextlib.ExitStack() as stack:
        links = _start_links(config, stack)
        cluster = stack.enter_context(_cluster(config, work, links))
        steps.note(f"starting {config.replicas} replicas in {work}")
        steps.begin("starting the cluster")
        cluster.start()
        cluster.wait_for_leader(timeout=60)
        cluster.wait_for_members(config.replicas, cluster.wait_for_leader(), timeout=60)
        return _drill(config, cluster, links, steps)


def _drill(  # noqa: PLR0917
    config: DrillConfig,
    cluster: Cluster,
    links: Links | None,
    steps: Steps,
    namespace: bytes = b"drill",
    possible: Collection[FaultKind] | None = None,
) -> DrillResult:
    addresses = tuple(cluster.gcs_address(i) for i in sorted(cluster.members))
    workload = WorkloadConfig(
        addresses,
        config.clients,
        config.keys,
        config.ops_per_key,
        namespace=namespace,
        seed=config.seed,
    )
    rng = random.Random(config.seed)
    nemesis = Nemesis(cluster, rng, links, NemesisTiming(), possible)
    kinds = [k for k in config.kinds if nemesis.supports(k)]
    drill_load = DrillLoad(workload)
    load = BackgroundLoad(drill_load).start()
    started = time.monotonic()
    loop = _FaultLoop(config, nemesis, kinds, load, steps)
    faults, notes = loop.faults, loop.notes
    try:
        steps.begin("warming up the load")
        load.wait_acks(config.warmup_acks, timeout=60)  # counted from 0: a fresh load
        steps.note(f"load running ({config.clients} clients); injecting faults")
        loop.run()
        time.sleep(config.quiet_s)
    finally:
        history = load.stop()
    ended = time.monotonic()
    steps.note(f"load stopped: {len(history)} operations; checking")
    steps.begin("checking the history and the replicas")
    try:
        nemesis.settle()
    except GcsHaError as exc:
        notes.append(f"the cluster did not become whole after the drill: {exc}")
    finals, ledger = asyncio.run(final_reads(addresses, workload.namespace, drill_load.keys.used))
    replicas = {cluster.node_id(i): cluster.gcs_address(i) for i in cluster.members}
    digests = checks.digests(replicas, cluster.admin_key)
    leaders = None
    if isinstance(cluster, ProcessCluster):
        logs = {cluster.node_id(i): cluster.log_path(i) for i in range(cluster.size)}
        leaders = checks.leaders_by_term(logs)
    return checks.evaluate(
        config=_describe(config, kinds),
        started=started,
        ended=ended,
        history=history,
        finals=finals,
        ledger=ledger,
        faults=faults,
        digests=digests,
        notes=notes,
        leaders=leaders,
    )


@dataclass
class _FaultLoop:
    """Inject faults until the count or the duration is reached (or the cluster or the
    load gives up), recording each fault and anything worth a note."""

    config: DrillConfig
    nemesis: Nemesis
    kinds: list[FaultKind]
    load: BackgroundLoad
    steps: Steps
    faults: list[Fault] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    mark: float = 0.0  # when `steps` last heard of progress

    def run(self) -> None:
        cfg = self.config
        self.steps.restart_clock()  # the ETA leaves out the start of the cluster and the load
        self.steps.begin("load running")
        self.mark = time.monotonic()
        end = None if cfg.duration_s is None else self.mark + cfg.duration_s
        if not self.kinds or (not cfg.faults and end is None):
            self.notes.append("no faults injected (none of the kinds is possible here)")
            time.sleep(max(0.0, (end or 0.0) - time.monotonic()))
            self._tick()
            return
        while (not cfg.faults or len(self.faults) < cfg.faults) and (
            end is None or time.monotonic() < end
        ):
            if not self._one():
                self.notes.append(
                    "stopped injecting faults early (cluster not whole or load stopped)"
                )
                return
            time.sleep(cfg.quiet_s)
            self._tick()

    def _tick(self) -> None:
        """Tell `steps`: a fault is done, or (with duration_s) how long since the last tick."""
        now = time.monotonic()
        self.steps.advance(1.0 if self.config.duration_s is None else now - self.mark)
        self.mark = now

    def _one(self) -> bool:
        kind = self.nemesis.rng.choice(self.kinds)
        self.steps.begin(f"fault {len(self.faults) + 1}: {kind}")
        fault = self.nemesis.inject(kind)
        self.faults.append(fault)
        settle = _settle(self.nemesis, self.notes)
        self.steps.note(
            f"fault {len(self.faults)}: {kind} {fault.detail or fault.error}; "
            f"whole again after {settle:.1f} s"
        )
        return settle >= 0 and self.load.alive()


def _settle(nemesis: Nemesis, notes: list[str]) -> float:
    try:
        return nemesis.settle()
    except GcsHaError as exc:
        notes.append(f"not whole after a fault: {exc}")
        return -1.0


def _describe(config: DrillConfig, kinds: list[FaultKind]) -> dict[str, object]:
    described = {k: v for k, v in asdict(config).items() if k not in ("work_dir", "keep")}
    described["kinds"] = list(kinds)
    return described


def _start_links(config: DrillConfig, stack: contextlib.ExitStack) -> Links | None:
    """The relay on the Raft links, when partitions are among the fault kinds."""
    if not any(k.startswith("partition") for k in config.kinds):
        return None
    relay = RaftLinkRelay(
        [f"{config.host}:{config.base_port + 100 + i}" for i in range(config.replicas)],
        host=config.host,
        base_port=config.base_port + 200,
    )
    relay.start()
    stack.callback(relay.close)
    return relay


def _cluster(config: DrillConfig, work: Path, links: Links | None) -> ProcessCluster:
    def env(i: int) -> dict[str, str]:
        out = {CRASH_SIM_ENV: "1"}
        if links is not None:
            out[RAFT_DIAL_ENV] = links.env_for(i)
        if config.unsafe_follower_reads:
            out[UNSAFE_FOLLOWER_READS_ENV] = "1"
        return out

    return ProcessCluster(
        config.replicas,
        work,
        gcs_port=config.base_port,
        raft_port=config.base_port + 100,
        host=config.host,
        cluster_name="gcs-ha-drill",
        replica_env=env,
    )


@contextlib.contextmanager
def _work_dir(config: DrillConfig) -> Iterator[Path]:
    if config.work_dir is not None:
        config.work_dir.mkdir(parents=True, exist_ok=True)
        yield config.work_dir
        return
    path = Path(tempfile.mkdtemp(prefix="gcs-ha-drill-"))
    try:
        yield path
    finally:
        if not config.keep:
            shutil.rmtree(path, ignore_errors=True)
