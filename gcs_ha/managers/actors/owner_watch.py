"""Watching the owners of non-detached actors (Ray's PollOwnerForActorRefDeleted): one
WaitForActorRefDeleted long poll per actor on its owner's core worker; a failed poll is
settled with the raylet's IsLocalWorkerDead. Details: actors/DESIGN.md, "Module notes".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from gcs_ha.errors import GcsHaError
from gcs_ha.managers.manager import BackgroundTasks
from gcs_ha.managers.ports import CoreWorkerClientPool, RayletClientPool
from gcs_ha.proto.ray.common_pb2 import Address
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo

log = logging.getLogger(__name__)

RETRY_S = 1.0


class AliveNodes(Protocol):
    def get_alive_node(self, node_id: bytes) -> GcsNodeInfo | None: ...


class OwnerWatch:
    """One WaitForActorRefDeleted poll per watched actor."""

    def __init__(
        self,
        workers: CoreWorkerClientPool,
        raylets: RayletClientPool,
        nodes: AliveNodes,
        on_released: Callable[[bytes], None],
        *,
        retry_s: float = RETRY_S,
    ) -> None:
        self._workers = workers
        self._raylets = raylets
        self._nodes = nodes
        self._on_released = on_released
        self._retry_s = retry_s
        self._polls: dict[bytes, asyncio.Task[None]] = {}
        self._tasks = BackgroundTasks("actor_owner_watch")

    def watch(self, actor_id: bytes, owner: Address) -> None:
        """Poll `owner` for the actor's references (replacing an earlier poll)."""
        self.unwatch(actor_id)
        task = self._tasks.spawn(self._poll(bytes(actor_id), owner), f"owner:{actor_id.hex()}")
        self._polls[bytes(actor_id)] = task

    def unwatch(self, actor_id: bytes) -> None:
        task = self._polls.pop(bytes(actor_id), None)
        if task is not None:
            task.cancel()

    def __len__(self) -> int:
        return len(self._polls)

    async def stop(self) -> None:
        self._polls.clear()
        await self._tasks.cancel_all()

    async def _poll(self, actor_id: bytes, owner: Address) -> None:
        while True:
            try:
                await self._workers.wait_for_actor_ref_deleted(owner, actor_id)
                log.info("actor %s has no references left", actor_id.hex())
                break
            except GcsHaError as exc:
                if await self._owner_is_dead(owner):
                    log.info("owner of actor %s is dead (%s)", actor_id.hex(), exc)
                    break
            await asyncio.sleep(self._retry_s)
        if self._polls.get(actor_id) is asyncio.current_task():
            del self._polls[actor_id]
        self._on_released(actor_id)

    async def _owner_is_dead(self, owner: Address) -> bool:
        node = self._nodes.get_alive_node(owner.node_id)
        if node is None:
            return True
        try:
            return await self._raylets.is_local_worker_dead(node, bytes(owner.worker_id))
        except GcsHaError:
            return False  # its raylet does not answer either: the node manager decides
