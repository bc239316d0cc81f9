"""Stand-ins for Ray's processes in actor tests and drills: core workers
(CoreWorkerService) as real grpc.aio servers on loopback, whose behaviour a test scripts,
what a raylet records about leases (the raylet itself is gcs_ha.testing.fake_raylet);
plus the small node directory and resource views the scheduler reads.

The worker answers PushTask (optionally failing or holding first) and holds
WaitForActorRefDeleted until the test drops the references. Everything it receives is
recorded for assertions.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from gcs_ha.proto.ray import core_worker_pb2 as cw
from gcs_ha.proto.ray import core_worker_pb2_grpc as cw_grpc
from gcs_ha.proto.ray import node_manager_pb2 as nm
from gcs_ha.proto.ray import pubsub_pb2
from gcs_ha.proto.ray.common_pb2 import (
    ACTOR_CREATION_TASK,
    Address,
    TaskSpec,
)
from gcs_ha.proto.ray.gcs_pb2 import ActorTableData, GcsNodeInfo, ResourcesData

Reply = nm.RequestWorkerLeaseReply
JOB = b"\x01\x00\x00\x00"
WAIT_S = 15.0
# A port another process holds is skipped, not shared: with gRPC's default SO_REUSEPORT
# two test runs at once would answer each other's calls.
EXCLUSIVE_PORT = [("grpc.so_reuseport", 0)]


def bind(server: grpc.aio.Server, ports: Iterator[int], tries: int = 50) -> int:
    """Bind `server` on 127.0.0.1 to the first free port `ports` yields; that port."""
    for _ in range(tries):
        port = next(ports)
        try:
            if server.add_insecure_port(f"127.0.0.1:{port}") == port:
                return port
        except RuntimeError:  # in use
            continue
    raise RuntimeError(f"no free port after {tries} tries")


def node_id(n: int) -> bytes:
    return bytes([n]) * 28


def actor_id(n: int, job: bytes = JOB) -> bytes:
    return n.to_bytes(12, "big") + job


def creation_spec(
    n: int,
    *,
    owner: Address | None = None,
    name: str = "",
    namespace: str = "ns",
    detached: bool = False,
    max_restarts: int = 0,
    resources: dict[str, float] | None = None,
    job: bytes = JOB,
) -> TaskSpec:
    """An actor creation task as a driver sends it."""
    spec = TaskSpec(
        type=ACTOR_CREATION_TASK,
        name=f"Actor{n}.__init__",
        job_id=job,
        task_id=actor_id(n, job) + b"\x00" * 8,
        required_resources=resources or {},
        required_placement_resources={"CPU": 1.0},
    )
    spec.caller_address.CopyFrom(owner or Address(node_id=node_id(1), worker_id=b"o" * 28))
    spec.function_descriptor.python_function_descriptor.class_name = f"Actor{n}"
    creation = spec.actor_creation_task_spec
    creation.actor_id = actor_id(n, job)
    creation.max_actor_restarts = max_restarts
    creation.is_detached = detached
    creation.name = name
    creation.ray_namespace = namespace
    if detached:  # the core worker roots a detached actor's tree at itself
        spec.root_detached_actor_id = creation.actor_id
    return spec


class RecordingPublisher:
    """A Publisher that keeps what was published."""

    def __init__(self) -> None:
        self.messages: list[pubsub_pb2.PubMessage] = []

    def publish(self, message: pubsub_pb2.PubMessage) -> None:
        copy = pubsub_pb2.PubMessage()
        copy.CopyFrom(message)
        self.messages.append(copy)

    def actor_states(self, actor: bytes) -> list[int]:
        return [
            m.actor_message.state
            for m in self.messages
            if m.channel_type == pubsub_pb2.GCS_ACTOR_CHANNEL and m.key_id == actor
        ]

    def on(self, channel: int) -> list[pubsub_pb2.PubMessage]:
        return [m for m in self.messages if m.channel_type == channel]


class Nodes:
    """A node directory over a dict (what the scheduler reads of the node manager)."""

    def __init__(self) -> None:
        self.alive: dict[bytes, GcsNodeInfo] = {}

    def get_alive_node(self, node_id: bytes) -> GcsNodeInfo | None:
        return self.alive.get(bytes(node_id))

    def alive_nodes(self) -> list[GcsNodeInfo]:
        return list(self.alive.values())


class Views:
    """Resource views over a dict (what the scheduler reads of the resource manager)."""

    def __init__(self) -> None:
        self.views: dict[bytes, ResourcesData] = {}

    def resource_view(self) -> dict[bytes, ResourcesData]:
        return dict(self.views)

    def set(self, node: bytes, available: dict[str, float]) -> None:
        self.views[node] = ResourcesData(node_id=node, resources_available=available)


# -- a core worker ----------------------------------------------------------------------


class FakeWorker(cw_grpc.CoreWorkerServiceServicer):
    """A leased worker: PushTask runs the 'constructor'; holds owner long polls."""

    def __init__(self, node: bytes, ports: Iterator[int], worker_id: bytes | None = None) -> None:
        self.node = node
        self.worker_id = worker_id or os.urandom(28)
        self.pushes: list[cw.PushTaskRequest] = []
        self.push_failures = 0  # the next N PushTask calls fail with UNAVAILABLE
        self.push_gate: asyncio.Event | None = None  # PushTask waits for it
        self.application_error = ""
        self.actor_id = b""  # the actor whose creation task arrived (GetCoreWorkerStats)
        self.running = 0
        self.crashed = False  # got a second creation task (a real worker would die)
        self.ref_waits: dict[bytes, asyncio.Event] = {}
        self.server = grpc.aio.server(options=EXCLUSIVE_PORT)
        cw_grpc.add_CoreWorkerServiceServicer_to_server(self, self.server)  # type: ignore[no-untyped-call]
        self.port = bind(self.server, ports)

    @property
    def address(self) -> Address:
        return Address(
            node_id=self.node, ip_address="127.0.0.1", port=self.port, worker_id=self.worker_id
        )

    async def start(self) -> FakeWorker:
        await self.server.start()
        return self

    async def stop(self) -> None:
        await self.server.stop(None)

    async def PushTask(self, request: cw.PushTaskRequest, context: Any) -> cw.PushTaskReply:
        self.pushes.append(request)
        if self.push_failures > 0:
            self.push_failures -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "worker busy")
        if self.actor_id:  # Ray's core worker: "SetupActor should only be called at most once"
            self.crashed = True
            await context.abort(grpc.StatusCode.INTERNAL, "a second actor creation task")
        self.actor_id = bytes(request.task_spec.actor_creation_task_spec.actor_id)
        self.running += 1
        try:
            if self.push_gate is not None:
                await self.push_gate.wait()
        finally:
            self.running -= 1
        reply = cw.PushTaskReply(actor_repr_name=f"repr-{request.task_spec.name}")
        if self.application_error:
            reply.is_application_error = True
            reply.task_execution_error = self.application_error
        return reply

    async def GetCoreWorkerStats(
        self, request: cw.GetCoreWorkerStatsRequest, context: Any
    ) -> cw.GetCoreWorkerStatsReply:
        reply = cw.GetCoreWorkerStatsReply()
        reply.core_worker_stats.actor_id = self.actor_id
        reply.core_worker_stats.num_running_tasks = self.running
        reply.core_worker_stats.worker_id = self.worker_id
        return reply

    async def WaitForActorRefDeleted(
        self, request: cw.WaitForActorRefDeletedRequest, context: Any
    ) -> cw.WaitForActorRefDeletedReply:
        event = self.ref_waits.setdefault(bytes(request.actor_id), asyncio.Event())
        await event.wait()
        return cw.WaitForActorRefDeletedReply()

    def drop_refs(self, actor: bytes) -> None:
        self.ref_waits.setdefault(actor, asyncio.Event()).set()

    def waiting_for(self, actor: bytes) -> bool:
        event = self.ref_waits.get(actor)
        return event is not None and not event.is_set()


# -- what a raylet received -----------------------------------------------------------


@dataclass
class RayletRecord:
    """What a FakeRaylet (gcs_ha.testing.fake_raylet) received about leases and workers."""

    leases: list[nm.RequestWorkerLeaseRequest] = field(default_factory=list)
    cancels: list[bytes] = field(default_factory=list)
    kills: list[nm.KillLocalActorRequest] = field(default_factory=list)
    releases: list[list[bytes]] = field(default_factory=list)


def ports(start: int) -> Iterator[int]:
    return itertools.count(start)


def alive_state(record: ActorTableData | None) -> bool:
    return record is not None and record.state == ActorTableData.ALIVE
