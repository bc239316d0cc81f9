"""The memory step of `gcs-ha bench actors`: K pending actors registered in the GCS, and the
resident memory of the GCS server processes with them (see DESIGN.md, "`bench actors`").

Raises UnavailableError when the actors are not all registered (nothing moves for
STALL_S, or the run's timeout passes) or the GCS does not answer for RETRY_S.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from gcs_ha.bench.actors_systems import ActorSystem
from gcs_ha.bench.cpu import child_pids
from gcs_ha.errors import UnavailableError
from gcs_ha.proto.ray import gcs_pb2
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.proto.ray.gcs_pb2 import ActorTableData

MIB = 1024.0 * 1024.0
CALL_TIMEOUT_S = 30.0
RETRY_S = 120.0  # Ray's GCS clients wait 60 s for a GCS to come back
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
POLL_S = 0.05
STALL_S = 60.0
STUCK_IDS = 5  # a failed row names this many of the actors not created
SETTLE_S = 2.0
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 1 << 30)]
UNREADY = gcs_pb2.ActorTableData.DEPENDENCIES_UNREADY
STATE_NAMES = {v: k for k, v in gcs_pb2.ActorTableData.ActorState.items()}


def memory_of(pid: int) -> dict[str, float]:
    """MiB of a process from /proc/PID/status: rss (VmRSS), anon (RssAnon), peak (VmHWM).
    A gcs-ha replica is two processes (its front end and its consensus process, a child):
    each field is their sum, and `frontend_rss` / `consensus_rss` split the RSS."""
    fields = _status_mib(pid)
    children = [_status_mib(child) for child in child_pids(pid)]
    if children:
        fields["frontend_rss"] = fields["rss"]
        fields["consensus_rss"] = round(sum(c["rss"] for c in children), 1)
        for key in ("rss", "anon", "peak"):
            fields[key] = round(fields[key] + sum(c[key] for c in children), 1)
    return fields


def _status_mib(pid: int) -> dict[str, float]:
    fields: dict[str, float] = {}
    names = {"VmRSS": "rss", "RssAnon": "anon", "VmHWM": "peak"}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in names:
            fields[names[key]] = round(int(value.split()[0]) * 1024 / MIB, 1)
    return fields


def _get_all(address: str, request: pb.GetAllActorInfoRequest) -> pb.GetAllActorInfoReply:
    """GetAllActorInfo, retried as Ray's clients retry while a gcs-ha cluster elects a
    leader (UNAVAILABLE, or no answer in time); UnavailableError after RETRY_S."""
    deadline = time.monotonic() + RETRY_S
    while True:
        try:
            with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
                stub = pb_grpc.ActorInfoGcsServiceStub(channel)  # type: ignore[no-untyped-call]
                reply: pb.GetAllActorInfoReply = stub.GetAllActorInfo(
                    request, timeout=CALL_TIMEOUT_S
                )
                return reply
        except grpc.RpcError as exc:
            code = exc.code()
            if code not in RETRYABLE or time.monotonic() > deadline:
                raise UnavailableError(f"GetAllActorInfo at {address}: {code}") from exc
            time.sleep(POLL_S)


def actor_total(address: str) -> int:
    """How many actors the GCS knows (registered and destroyed), from one cheap call."""
    return _get_all(address, pb.GetAllActorInfoRequest(limit=1)).total


def job_actors(address: str, job_id: bytes, state: int | None = None) -> list[ActorTableData]:
    """`job_id`'s actors (only those in `state`, if given)."""
    filters: dict[str, Any] = {"job_id": job_id}
    if state is not None:
        filters["state"] = state
    return list(_get_all(address, pb.GetAllActorInfoRequest(filters=filters)).actor_table_data)


def job_actor_states(address: str, job_id: bytes) -> Counter[str]:
    """State name -> how many of `job_id`'s actors are in it."""
    return Counter(STATE_NAMES.get(a.state, str(a.state)) for a in job_actors(address, job_id))


@dataclass
class MemoryProbe:
    """One system's memory step: the baseline, then the waits while the driver
    registers its actors batch by batch."""

    system: ActorSystem
    job_id: bytes
    count: int
    batch: int
    total_before: int
    before: dict[str, dict[str, float]]
    deadline: float
    log_path: Path
    registered: int = 0  # progress so far, for failed_row
    not_created: int = 0
    stuck_ids: list[str] = field(default_factory=list)  # some not created (hex ids)

    @classmethod
    def begin(
        cls,
        system: ActorSystem,
        job_hex: str,
        *,
        count: int,
        batch: int,
        timeout_s: float,
        log_path: Path,
    ) -> MemoryProbe:
        before = {label: memory_of(pid) for label, pid in system.servers.items()}
        total = actor_total(system.address)
        deadline = time.monotonic() + timeout_s
        return cls(system, bytes.fromhex(job_hex), count, batch, total, before, deadline, log_path)

    def wait_registered(self, submitted: int) -> None:
        """Wait until the GCS has registered the first `submitted` actors and none of
        them is still DEPENDENCIES_UNREADY (CreateActor done: the raylet holds their
        leases). UnavailableError when nothing moves for STALL_S (a lost registration
        never comes back) or the run's timeout passes."""
        address, target = self.system.address, self.total_before + submitted
        last, moved = (-1, -1), time.monotonic()
        while True:
            total = actor_total(address)
            stuck = job_actors(address, self.job_id, UNREADY)
            unready = len(stuck)
            self.registered, self.not_created = total - self.total_before, unready
            self.stuck_ids = [a.actor_id.hex() for a in stuck[:STUCK_IDS]]
            if total >= target and not unready:
                return
            if (total, unready) != last:
                last, moved = (total, unready), time.monotonic()
            self.system.check_alive()
            now = time.monotonic()
            if now > self.deadline or now - moved > STALL_S:
                raise UnavailableError(
                    f"{self.system.name}: {total - self.total_before} of {submitted} actors "
                    f"registered, {unready} not yet created, nothing moved for "
                    f"{now - moved:.0f} s; see {self.log_path}"
                )
            time.sleep(POLL_S)

    def finish(self, t0: float) -> list[dict[str, Any]]:
        """After the last batch was registered: check the job's actors, let the servers
        settle, read their memory; the `register` and `memory` rows."""
        seconds = time.monotonic() - t0
        states = job_actor_states(self.system.address, self.job_id)
        states.pop("DEAD", None)  # the job's actors of the earlier steps
        if states != {"PENDING_CREATION": self.count}:
            raise UnavailableError(f"{self.system.name}: pending actors in states {states}")
        time.sleep(SETTLE_S)
        return [self._register_row(seconds), self._memory_row()]

    def failed_row(self, error: str) -> dict[str, Any]:
        """The `register` row of a step that did not complete: how far it got, and why."""
        return {
            "system": self.system.name,
            "op": "register",
            "count": self.count,
            "batch": self.batch,
            "registered": self.registered,
            "not_created": self.not_created,
            "not_created_ids": self.stuck_ids,
            "error": error,
        }

    def _register_row(self, seconds: float) -> dict[str, Any]:
        return {
            "system": self.system.name,
            "op": "register",
            "count": self.count,
            "seconds": round(seconds, 3),
            "actors_per_s": round(self.count / seconds, 1),
            "batch": self.batch,
        }

    def _memory_row(self) -> dict[str, Any]:
        """The main GCS process's memory (gcs_server, or the serving gcs-ha replica), and
        the other replicas' RSS."""
        after = {label: memory_of(pid) for label, pid in self.system.servers.items()}
        main = self.system.leader_label() or next(iter(after))
        mem, before = after[main], self.before[main]
        row: dict[str, Any] = {
            "system": self.system.name,
            "op": "memory",
            "count": self.count,
            "process": main + (" (leader)" if self.system.cluster is not None else ""),
            "rss_mib": mem["rss"],
            "anon_mib": mem["anon"],
            "peak_mib": mem["peak"],
            "rss_before_mib": before["rss"],
            "kib_per_actor": round((mem["rss"] - before["rss"]) * 1024 / self.count, 2),
        }
        for part in ("frontend_rss", "consensus_rss"):
            if part in mem:
                row[f"{part}_mib"] = mem[part]
        others = {label: m["rss"] for label, m in after.items() if label != main}
        if others:
            row["followers_rss_mib"] = others
        return row
