"""A periodic sweep of actor workers nobody holds: the leader sends each ALIVE node
ReleaseUnusedActorWorkers with the workers its actors hold, every `period_s`.

Why: a raylet grants a lease when a worker is free, however late, and a lease granted
to a caller that is gone (a leader that died or was deposed while the request waited for
a worker to start) holds its worker and resources for good. The lease intents
(actor_lease_intents) let a new leader cancel what a previous one left queued, and the
node manager's greeting releases what was granted before the new leader took over; the
scheduler kills grants that reach an attempt already cancelled. Yet a lease can slip
through all three: a CancelWorkerLease lost in a demotion, or a grant made after the
greeting. `ray_churn.py` found one such worker (0.001 CPU held, no actor) after 40
leadership changes. The sweep bounds how long any such lease lives, whatever its cause.

A node is skipped while one of this leader's own lease requests to it is unanswered: its
grant may be on the way, and a release would take that worker (the attempt would then
fail at PushTask and lease again: slower, not wrong). Spared: every worker a registered
actor holds (`in_use`), which includes the ones being created.

Errors: a failed call is logged and retried at the next sweep.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from gcs_ha.errors import GcsHaError
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo

log = logging.getLogger(__name__)

SWEEP_PERIOD_S = 15.0


class WorkerReleaser(Protocol):
    """The part of the RayletClientPool port the sweep uses."""

    async def release_unused_actor_workers(
        self, node: GcsNodeInfo, worker_ids_in_use: Iterable[bytes]
    ) -> None: ...


class ActorWorkerSweep:
    """Runs `sweep()` every `period_s` (from `run()`, a task the actor manager owns)."""

    def __init__(
        self,
        nodes: Callable[[], list[GcsNodeInfo]],
        raylets: WorkerReleaser,
        in_use: Callable[[bytes], Iterable[bytes]],
        leasing: Callable[[bytes], bool],
        period_s: float = SWEEP_PERIOD_S,
    ) -> None:
        self._nodes = nodes
        self._raylets = raylets
        self._in_use = in_use
        self._leasing = leasing
        self._period_s = period_s

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._period_s)
            await self.sweep()

    async def sweep(self) -> None:
        """One round over the ALIVE nodes, concurrently."""
        await asyncio.gather(*(self._sweep(node) for node in self._nodes()))

    async def _sweep(self, node: GcsNodeInfo) -> None:
        node_id = bytes(node.node_id)
        if self._leasing(node_id):
            return
        try:
            await self._raylets.release_unused_actor_workers(node, list(self._in_use(node_id)))
        except GcsHaError as exc:
            log.info("sweep of node %s: %s", node_id.hex()[:12], exc)
