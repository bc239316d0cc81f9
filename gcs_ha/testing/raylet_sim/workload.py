"""What a driver does to the simulated cluster (jobs, detached actors, one-bundle groups),
and the measurements taken through the GCS's own read calls (probe, views_match,
dead_nodes); the bench's and the tests' side of the simulator.

Errors: grpc.aio.AioRpcError from the GCS calls (`retry_unavailable` retries them), and
RuntimeError when the GCS answers with a non-OK status.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import grpc
import grpc.aio

from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray.common_pb2 import (
    ACTOR_CREATION_TASK,
    PACK,
    PYTHON,
    Address,
    Bundle,
    JobConfig,
    PlacementGroupSpec,
    TaskSpec,
)
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo, JobTableData
from gcs_ha.testing.raylet_sim.fleet import Fleet
from gcs_ha.testing.raylet_sim.gcs import GcsStubs
from gcs_ha.testing.raylet_sim.node import EPSILON, SimNode

T = TypeVar("T")
ACTOR_CPU = 0.01
BUNDLE_CPU = 0.01
PROBE_RESOURCE = "sim_probe"
NAMESPACE = "raylet_sim"


def _ok(reply: Any, what: str) -> Any:
    if reply.status.code != 0:
        raise RuntimeError(f"{what}: status {reply.status.code} {reply.status.message}")
    return reply


async def retry_unavailable(make: Callable[[], Awaitable[T]], deadline_s: float = 60.0) -> T:
    """Call `make()` until it does not fail with a gRPC error (every 50 ms, up to deadline)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            return await make()
        except grpc.aio.AioRpcError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.05)


def driver_address(fleet: Fleet) -> Address:
    head = fleet.nodes[0]
    return Address(node_id=head.node_id, ip_address=head.ip, port=head.port, worker_id=b"d" * 28)


async def add_job(fleet: Fleet) -> bytes:
    gcs = fleet.nodes[0].gcs
    reply = await gcs.job.GetNextJobID(pb.GetNextJobIDRequest(), **gcs.kw)
    job_id = int(reply.job_id).to_bytes(4, "little")
    data = JobTableData(
        job_id=job_id,
        is_dead=False,
        driver_ip_address=fleet.nodes[0].ip,
        driver_pid=os.getpid(),
        driver_address=driver_address(fleet),
        config=JobConfig(ray_namespace=NAMESPACE),
        start_time=int(time.time() * 1000),
        entrypoint="raylet_sim",
    )
    _ok(await gcs.job.AddJob(pb.AddJobRequest(data=data), **gcs.kw), "AddJob")
    fleet.job_id = job_id
    return job_id


def actor_spec(fleet: Fleet, job_id: bytes, cpu: float = ACTOR_CPU) -> TaskSpec:
    """A detached actor's creation task, as a driver on node 0 sends it."""
    actor_id = os.urandom(12) + job_id
    spec = TaskSpec(
        type=ACTOR_CREATION_TASK,
        language=PYTHON,
        name="SimActor.__init__",
        job_id=job_id,
        task_id=b"\x00" * 8 + actor_id,
        parent_task_id=b"\x00" * 24,
        caller_id=b"\x00" * 24,
        num_returns=1,
        required_resources={"CPU": cpu} if cpu else {},
        required_placement_resources={"CPU": cpu} if cpu else {},
    )
    spec.caller_address.CopyFrom(driver_address(fleet))
    descriptor = spec.function_descriptor.python_function_descriptor
    descriptor.module_name, descriptor.class_name = "raylet_sim", "SimActor"
    descriptor.function_name = "__init__"
    creation = spec.actor_creation_task_spec
    creation.actor_id = actor_id
    creation.max_actor_restarts = 0
    creation.is_detached = True
    creation.ray_namespace = NAMESPACE
    spec.root_detached_actor_id = actor_id
    return spec


async def create_actor(gcs: GcsStubs, spec: TaskSpec, deadline_s: float = 120.0) -> None:
    """RegisterActor then CreateActor (each retried on gRPC errors, as Ray replays)."""
    kw = {**gcs.kw, "timeout": 60.0}
    reply = await retry_unavailable(
        lambda: gcs.actor.RegisterActor(pb.RegisterActorRequest(task_spec=spec), **kw), deadline_s
    )
    _ok(reply, "RegisterActor")
    reply = await retry_unavailable(
        lambda: gcs.actor.CreateActor(pb.CreateActorRequest(task_spec=spec), **kw), deadline_s
    )
    _ok(reply, "CreateActor")


async def _bounded(jobs: Sequence[Callable[[], Awaitable[None]]], concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await job()

    await asyncio.gather(*(one(j) for j in jobs))


async def create_actors(fleet: Fleet, count: int, concurrency: int = 100) -> float:
    """Create `count` actors; the seconds it took."""
    job = fleet.job_id or await add_job(fleet)
    specs = [actor_spec(fleet, job) for _ in range(count)]
    t0 = time.monotonic()
    await _bounded(
        [
            partial(create_actor, fleet.stubs_for(i % len(fleet.nodes)), s)
            for i, s in enumerate(specs)
        ],
        concurrency,
    )
    return time.monotonic() - t0


def pg_spec(job_id: bytes, cpu: float = BUNDLE_CPU) -> PlacementGroupSpec:
    pg_id = os.urandom(14) + job_id
    bundle = Bundle(unit_resources={"CPU": cpu})
    bundle.bundle_id.placement_group_id = pg_id
    bundle.bundle_id.bundle_index = 0
    return PlacementGroupSpec(
        placement_group_id=pg_id,
        name="",
        bundles=[bundle],
        strategy=PACK,
        creator_job_id=job_id,
        is_detached=True,
    )


async def create_pg(gcs: GcsStubs, spec: PlacementGroupSpec) -> None:
    kw = {**gcs.kw, "timeout": 60.0}
    reply = await retry_unavailable(
        lambda: gcs.pg.CreatePlacementGroup(
            pb.CreatePlacementGroupRequest(placement_group_spec=spec), **kw
        )
    )
    _ok(reply, "CreatePlacementGroup")
    wait = pb.WaitPlacementGroupUntilReadyRequest(placement_group_id=spec.placement_group_id)
    reply = await retry_unavailable(lambda: gcs.pg.WaitPlacementGroupUntilReady(wait, **kw))
    _ok(reply, "WaitPlacementGroupUntilReady")


async def create_pgs(fleet: Fleet, count: int, concurrency: int = 100) -> float:
    """Create `count` one-bundle groups and wait until each is ready; the seconds."""
    job = fleet.job_id or await add_job(fleet)
    specs = [pg_spec(job) for _ in range(count)]
    t0 = time.monotonic()
    await _bounded(
        [partial(create_pg, fleet.stubs_for(i % len(fleet.nodes)), s) for i, s in enumerate(specs)],
        concurrency,
    )
    return time.monotonic() - t0


async def resource_usage(gcs: GcsStubs) -> dict[bytes, dict[str, float]]:
    """node id -> resources_available, as GetAllResourceUsage reports them."""
    reply = await gcs.resources.GetAllResourceUsage(
        pb.GetAllResourceUsageRequest(), **gcs.kw, timeout=30.0
    )
    return {
        bytes(data.node_id): dict(data.resources_available)
        for data in reply.resource_usage_data.batch
    }


def _shows(node: SimNode, available: dict[str, float] | None) -> bool:
    if available is None:
        return False
    return all(abs(available.get(k, 0.0) - v) <= 1e-6 + EPSILON for k, v in node.available.items())


async def views_match(fleet: Fleet, gcs: GcsStubs) -> int:
    """How many nodes' current views GetAllResourceUsage does NOT show yet."""
    usage = await resource_usage(gcs)
    return sum(not _shows(n, usage.get(n.node_id)) for n in fleet.nodes)


async def probe(fleet: Fleet, node: SimNode, value: float, timeout_s: float = 30.0) -> float | None:
    """Change `node`'s view (PROBE_RESOURCE = value) and poll GetAllResourceUsage until it
    shows it; seconds from the moment the node wrote the view to its stream (None on
    timeout)."""
    version = node.set_available(PROBE_RESOURCE, value)
    gcs = fleet.stubs_for((node.index + 1) % len(fleet.nodes))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            usage = await resource_usage(gcs)
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.05)
            continue
        seen = usage.get(node.node_id, {}).get(PROBE_RESOURCE)
        sent = node.sent_at.get(version)
        if seen is not None and abs(seen - value) < 1e-6 and sent is not None:
            return max(0.0, time.monotonic() - sent)
    return None


async def dead_nodes(fleet: Fleet) -> int:
    """How many simulated nodes the GCS reports DEAD."""
    gcs = fleet.nodes[0].gcs
    reply = await gcs.node.GetAllNodeInfo(pb.GetAllNodeInfoRequest(), **gcs.kw, timeout=30.0)
    ours = {n.node_id for n in fleet.nodes}
    return sum(
        1 for info in reply.node_info_list
        if bytes(info.node_id) in ours and info.state == GcsNodeInfo.DEAD
    )  # fmt: skip
