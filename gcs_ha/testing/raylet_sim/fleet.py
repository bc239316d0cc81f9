"""The simulated nodes of one process, and what they share: the GCS connection(s), the
view ticker, task events, spillback choices and counters.

`GcsStubs` is the GCS as the nodes call it: one channel per `nodes_per_channel` nodes
(a real raylet has a connection of its own; sharing saves memory at large N), the
`ray_cluster_id` header on every unary call (the syncer stream carries only `node_id`).
The GCS address may list several replicas ("a,b,c"): gRPC's pick_first connects to
the first that accepts, as one DNS name covering every replica would.

Errors: `start` raises OSError when a node's address cannot be bound and
grpc.aio.AioRpcError when GetClusterId fails.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, fields
from typing import Any

import grpc
import grpc.aio

from gcs_ha.proto.ray import gcs_pb2
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray.common_pb2 import WORKER, Address
from gcs_ha.testing.raylet_sim.gcs import GcsStubs, cluster_id, node_ip
from gcs_ha.testing.raylet_sim.node import Counters, SimNode, fits

log = logging.getLogger(__name__)

TICK_S = 0.1  # raylet_report_resources_period_milliseconds
TASK_EVENT_BATCH = 10


@dataclass(frozen=True)
class FleetConfig:
    """What the fleet simulates."""

    gcs_address: str
    nodes: int
    ip_prefix: str = "127.1"
    port: int = 33900
    cpus: float = 16.0
    nodes_per_channel: int = 10
    register_concurrency: int = 20
    view_changes_per_s: float = 0.0  # background churn over the whole fleet
    task_events_per_s: float = 100.0  # over the whole fleet, in batches of 10


class Fleet:
    """N simulated raylets; see the module docstring."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.rng = random.Random()
        self.cluster_id = b""
        self.nodes: list[SimNode] = []
        self._stubs: list[GcsStubs] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.job_id = b""

    def stubs_for(self, index: int) -> GcsStubs:
        return self._stubs[index // self.config.nodes_per_channel]

    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        """Bind every node, then register them (a few at a time) and start the loops."""
        config = self.config
        self.cluster_id = await cluster_id(config.gcs_address)
        channels = math.ceil(config.nodes / config.nodes_per_channel)
        self._stubs = [GcsStubs(config.gcs_address, self.cluster_id) for _ in range(channels)]
        resources = {"CPU": config.cpus, "memory": 64e9, "object_store_memory": 16e9}
        for i in range(config.nodes):
            node = SimNode(self, i, node_ip(config.ip_prefix, i), config.port, resources)
            await node.serve()
            self.nodes.append(node)
        gate = asyncio.Semaphore(config.register_concurrency)

        async def join(node: SimNode) -> None:
            async with gate:
                await node.join()

        await asyncio.gather(*(join(n) for n in self.nodes))
        self.background(self._tick_loop())
        self.background(self._task_event_loop())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(n.stop() for n in self.nodes), return_exceptions=True)
        for stubs in self._stubs:
            await stubs.close()

    # -- what the nodes share ---------------------------------------------------------

    def spill_target(self, need: Mapping[str, float], origin: SimNode) -> SimNode | None:
        """A node under half full that fits `need` (a few random tries, then a scan)."""
        for _ in range(8):
            node = self.rng.choice(self.nodes)
            if node.utilization() < 0.5 and fits(need, node.available):
                return node
        roomy = [n for n in self.nodes if fits(need, n.available)]
        return min(roomy, key=SimNode.utilization, default=None)

    def report_worker(self, node: SimNode, address: Address) -> None:
        """AddWorkerInfo for a worker a lease started (the worker itself calls it)."""
        data = gcs_pb2.WorkerTableData(
            worker_address=address,
            is_alive=True,
            worker_type=WORKER,
            timestamp=int(time.time() * 1000),
            pid=4242,
        )
        stubs = node.gcs
        request = pb.AddWorkerInfoRequest(worker_data=data)
        self.background(
            node.retrying("AddWorkerInfo", lambda: stubs.worker.AddWorkerInfo(request, **stubs.kw))
        )

    async def _tick_loop(self) -> None:
        """Every 100 ms: background churn, then send every changed view."""
        churn = 0.0
        while True:
            await asyncio.sleep(TICK_S)
            churn += self.config.view_changes_per_s * TICK_S
            while churn >= 1.0:
                churn -= 1.0
                self.rng.choice(self.nodes).change("memory", self.rng.choice((-1.0, 1.0)))
            for node in self.nodes:
                node.flush()

    async def _task_event_loop(self) -> None:
        """Task events at `task_events_per_s`, in batches of 10 from random nodes."""
        rate = self.config.task_events_per_s
        if rate <= 0:
            return
        while True:
            calls = max(1, round(rate / TASK_EVENT_BATCH))
            for _ in range(calls):
                self.background(self._send_task_events(self.rng.choice(self.nodes)))
            await asyncio.sleep(1.0)

    async def _send_task_events(self, node: SimNode) -> None:
        stubs = self.stubs_for(node.index)
        job = self.job_id or b"\x01\x00\x00\x00"
        data = gcs_pb2.TaskEventData(job_id=job)
        for _ in range(TASK_EVENT_BATCH):
            event = data.events_by_task.add(task_id=os.urandom(24), attempt_number=0, job_id=job)
            event.state_updates.node_id = node.node_id
        try:
            await stubs.task.AddTaskEventData(pb.AddTaskEventDataRequest(data=data), **stubs.kw)
        except grpc.aio.AioRpcError:
            node.counters.gcs_errors += 1

    def totals(self) -> dict[str, int]:
        """The nodes' counters summed (call lists left out), plus false deaths."""
        sums = {f.name: 0 for f in fields(Counters) if f.name != "calls"}
        for node in self.nodes:
            for name in sums:
                sums[name] += getattr(node.counters, name)
        sums["declared_dead"] = sum(n.declared_dead for n in self.nodes)
        return sums
