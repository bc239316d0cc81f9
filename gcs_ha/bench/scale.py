"""`gcs-ha bench scale`: how many raylets, actors and placement groups one GCS carries,
gcs-ha against Ray's own gcs_server, with the raylet simulator (gcs_ha.testing.raylet_sim)
playing the nodes.

Steps and rows: DESIGN.md ("`bench scale`"). A failed point becomes a row with `error`.

Raises ConfigError (a system that cannot run here) and UnavailableError (a server did
not come up).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gcs_ha import table
from gcs_ha.bench.common import run_dir
from gcs_ha.bench.cpu import child_pids, process_cpu_s
from gcs_ha.bench.kv_systems import RunningSystem, check_available, start_system
from gcs_ha.errors import ConfigError, GcsHaError, UnavailableError
from gcs_ha.progress import QUIET, Steps

log = logging.getLogger(__name__)

SIM_PORT_OFFSET = 100  # every simulated node listens on base+100 of its own 127.x.y.z


@dataclass(frozen=True)
class ScaleBenchConfig:
    """What `gcs-ha bench scale` measures."""

    systems: tuple[str, ...] = ("ray-memory", "ray-redis", "gcs-ha-3")
    nodes: tuple[int, ...] = (50, 100, 250, 500, 1000)
    actors: int = 10_000
    pgs: int = 1_000
    probes: int = 20
    settle_s: float = 15.0
    failover: bool = True
    base_port: int = 33000
    ip_prefix: str = "127.1"
    nodes_per_channel: int = 10
    timeout_s: float = 600.0
    data_dir: Path | None = None
    keep: bool = False

    def check(self) -> None:
        check_available(self.systems)
        if max(self.nodes) > 250 * 250:
            raise ConfigError(f"at most {250 * 250} nodes (loopback addresses per prefix)")
        if self.base_port + SIM_PORT_OFFSET >= 65536:
            raise ConfigError(f"--base-port {self.base_port}: the nodes need base+100")


def step_count(config: ScaleBenchConfig) -> int:
    return len(config.systems) * len(config.nodes)


def run_scale_bench(config: ScaleBenchConfig, steps: Steps = QUIET) -> list[dict[str, Any]]:
    """Every (system, N) point, one after the other; the rows (ratios added)."""
    config.check()
    rows = []
    with run_dir(config.data_dir, config.keep) as base:
        for name in config.systems:
            for n in config.nodes:
                steps.begin(f"{name}: {n} nodes")
                rows.append(_point(config, name, n, base / f"{name}-{n}"))
                log.info("point: %s", json.dumps(rows[-1]))  # -v: rows survive an aborted run
                steps.advance()
    return add_ratios(rows)


def _point(config: ScaleBenchConfig, name: str, n: int, base: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"system": name, "nodes": n}
    try:
        with start_system(name, base, config.base_port) as sut:
            _measure(config, sut, n, base, row)
    except (GcsHaError, OSError) as exc:
        row["error"] = str(exc)
        log.warning("%s at %d nodes: %s", name, n, exc)
    return row


def _measure(
    config: ScaleBenchConfig, sut: RunningSystem, n: int, base: Path, row: dict[str, Any]
) -> None:
    rss0 = gcs_rss_mib(sut)
    term0 = _term(sut)
    with _simulator(config, sut, n, base) as sim:
        ready = sim.expect("ready")
        row["register_s"] = ready["seconds"]
        cpu0, t0 = system_cpu_s(sut), time.monotonic()
        time.sleep(config.settle_s)
        row["idle_cores"] = round((system_cpu_s(sut) - cpu0) / (time.monotonic() - t0), 3)
        rss1 = gcs_rss_mib(sut)
        row["rss_mib"] = round(rss1, 1)
        row["kib_per_node"] = round((rss1 - rss0) * 1024 / n, 1)
        delays = sim.ask(f"probe {config.probes}", "probe")["delays"]
        if delays:
            row["view_p50_ms"] = round(statistics.median(delays) * 1000, 2)
            row["view_p99_ms"] = round(_percentile(delays, 0.99) * 1000, 2)
        if config.actors:
            done = sim.ask(f"actors {config.actors}", "actors")
            row["actors_per_s"] = round(config.actors / done["seconds"], 1)
            rss2 = gcs_rss_mib(sut)
            row["kib_per_actor"] = round((rss2 - rss1) * 1024 / config.actors, 2)
        if config.pgs:
            done = sim.ask(f"pgs {config.pgs}", "pgs")
            row["pgs_per_s"] = round(config.pgs / done["seconds"], 1)
        dead = sim.ask("dead", "dead")
        row["false_deaths"] = max(dead["gcs_dead"], dead["declared_dead"])
        term1 = _term(sut)
        if term0 is not None and term1 is not None:
            row["elections"] = term1 - term0
        if config.failover and sut.cluster is not None:
            row.update(_failover(sut, sim))
        stats = sim.ask("stats", "stats")
        row["sim_rss_mib"], row["sim_cpu_s"] = stats["rss_mib"], stats["cpu_s"]


def _failover(sut: RunningSystem, sim: Simulator) -> dict[str, Any]:
    cluster = sut.cluster
    assert cluster is not None
    leader = cluster.serving_leader()
    if leader is None:
        return {"failover_error": "no serving leader"}
    t_kill = time.monotonic()
    cluster.kill(leader)
    sut.procs = {k: p for k, p in sut.procs.items() if p.poll() is None}
    reply = sim.ask(f"failover {t_kill}", "failover")
    return {
        "failover_views_s": _round(reply["views_s"]),
        "failover_actor_s": _round(reply["actor_s"]),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _term(sut: RunningSystem) -> int | None:
    if sut.cluster is None:
        return None
    terms = []
    for i in sut.cluster.running():
        with contextlib.suppress(GcsHaError):
            terms.append(sut.cluster.status(i, timeout=5.0).term)
    return max(terms, default=None)


# -- the system's processes -------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    return [pid, *child_pids(pid)]


def system_cpu_s(sut: RunningSystem) -> float:
    """CPU seconds so far of every process of the system (children included)."""
    return sum(process_cpu_s(p) for proc in sut.procs.values() for p in _tree(proc.pid))


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def gcs_rss_mib(sut: RunningSystem) -> float:
    """Resident MiB of the GCS: Ray's gcs_server, or the serving replica's processes."""
    if sut.cluster is None:
        return _rss_mib(sut.procs["gcs_server"].pid)
    leader = sut.cluster.serving_leader()
    replica = sut.cluster.process(leader) if leader is not None else None
    return 0.0 if replica is None else sum(_rss_mib(p) for p in _tree(replica.pid))


# -- the simulator process --------------------------------------------------------------


class Simulator:
    """The raylet simulator as a child process: commands on stdin, JSON lines back."""

    def __init__(
        self, proc: subprocess.Popen[bytes], sut: RunningSystem, timeout_s: float, log_path: Path
    ) -> None:
        self.proc, self.sut, self.timeout_s, self.log_path = proc, sut, timeout_s, log_path
        self._buffer = b""

    def ask(self, command: str, event: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        return self.expect(event)

    def expect(self, event: str) -> dict[str, Any]:
        """The next JSON line; UnavailableError on an error event, an exit or a timeout."""
        line = self._line()
        message: dict[str, Any] = json.loads(line)
        if message.get("event") != event:
            raise UnavailableError(f"raylet simulator: {message.get('error', message)}")
        return message

    def _line(self) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + self.timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                if time.monotonic() > deadline:
                    raise UnavailableError(
                        f"raylet simulator silent {self.timeout_s:.0f} s; see {self.log_path}"
                    )
                self.sut.check_alive()
                if selector.select(timeout=0.5):
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        raise UnavailableError(f"raylet simulator exited; see {self.log_path}")
                    self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line


@contextlib.contextmanager
def _simulator(
    config: ScaleBenchConfig, sut: RunningSystem, n: int, base: Path
) -> Iterator[Simulator]:
    address = sut.address
    if sut.cluster is not None:  # every replica, as one name covering them all would
        address = ",".join(sut.cluster.gcs_address(i) for i in sut.cluster.running())
    cmd = [
        sys.executable, "-m", "gcs_ha.testing.raylet_sim", "--gcs", address, "--nodes", str(n),
        "--ip-prefix", config.ip_prefix, "--port", str(config.base_port + SIM_PORT_OFFSET),
        "--nodes-per-channel", str(config.nodes_per_channel),
    ]  # fmt: skip
    log_path = base / "logs" / "raylet_sim.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as err:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, start_new_session=True
        )
    try:
        yield Simulator(proc, sut, config.timeout_s, log_path)
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(15.0)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


# -- the report -------------------------------------------------------------------------

RATIO_FIELDS = (
    "actors_per_s",
    "pgs_per_s",
    "kib_per_node",
    "kib_per_actor",
    "idle_cores",
    "view_p99_ms",
)


def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`vs_ray_memory`: each field of RATIO_FIELDS over ray-memory's at the same N."""
    ray = {r["nodes"]: r for r in rows if r["system"] == "ray-memory" and "error" not in r}
    for row in rows:
        base = ray.get(row["nodes"])
        if base is None or row["system"] == "ray-memory":
            continue
        row["vs_ray_memory"] = {
            f: round(row[f] / base[f], 2)
            for f in RATIO_FIELDS
            if isinstance(row.get(f), (int, float)) and base.get(f)
        }
    return rows


COLUMNS = (
    ("system", "system"), ("nodes", "nodes"), ("register_s", "reg_s"),
    ("false_deaths", "false_dead"), ("elections", "elect"), ("view_p50_ms", "view_p50_ms"),
    ("view_p99_ms", "view_p99_ms"), ("idle_cores", "idle_cores"), ("rss_mib", "rss_mib"),
    ("kib_per_node", "kib/node"), ("actors_per_s", "actors/s"),
    ("kib_per_actor", "kib/actor"), ("pgs_per_s", "pgs/s"),
    ("failover_views_s", "fo_views_s"), ("failover_actor_s", "fo_actor_s"),
)  # fmt: skip


def render_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a plain table (gcs_ha/table.py), then one line per failed point."""
    body = [[row.get(key) for key, _ in COLUMNS] for row in rows]
    text = table.render_table(body, header=[title for _, title in COLUMNS], left=1)
    errors = [f"{r['system']} at {r['nodes']} nodes: {r['error']}" for r in rows if "error" in r]
    return "\n".join([text, *errors])
