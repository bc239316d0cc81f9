"""The actor scheduler (Ray's GcsActorScheduler): gets a worker for an actor and runs its
constructor there, one background attempt per actor incarnation; cancellable per node,
worker or lease (`cancel_on_node`, `cancel_on_worker`, `cancel_on_leasing`). At `start`
it takes over a previous leader's lease intents. Mechanism and failover:
actors/DESIGN.md, "Mechanism", "Failover" and "Module notes".

Errors: none raised to callers; RPC and store failures are retried, and an attempt ends
quietly when its manager stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gcs_ha.errors import GcsHaError
from gcs_ha.managers.actors.gcs_actor import DEAD, PENDING_CREATION, RESTARTING, GcsActor
from gcs_ha.managers.actors.lease_intents import ActorLeaseIntents, LeaseIntent
from gcs_ha.managers.actors.node_selection import select_forwarding_node
from gcs_ha.managers.manager import BackgroundTasks, GcsInitData
from gcs_ha.managers.ports import CoreWorkerClientPool, RayletClientPool
from gcs_ha.managers.resource_manager import NodeView
from gcs_ha.proto.ray.common_pb2 import Address, ResourceMapEntry
from gcs_ha.proto.ray.core_worker_pb2 import PushTaskReply, PushTaskRequest
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo
from gcs_ha.proto.ray.node_manager_pb2 import RequestWorkerLeaseReply

log = logging.getLogger(__name__)

LEASE_RETRY_S = 0.2  # gcs_lease_worker_retry_interval_ms
CREATE_RETRY_S = 0.2  # gcs_create_actor_retry_interval_ms
RELEASE_WAIT_S = 30.0  # the longest a lease waits for the node's ReleaseUnusedActorWorkers
TAKEOVER_CANCEL_TIMEOUT_S = 1.0
NIL_ACTOR_ID = b"\xff" * 16  # Ray's ActorID::Nil(): "whatever actor the worker holds"
NO_NODES_MESSAGE = "No available nodes to schedule the actor"
SCHEDULING_FAILED = RequestWorkerLeaseReply.SCHEDULING_FAILED


class NodeDirectory(Protocol):
    """The ALIVE nodes (the node manager)."""

    def get_alive_node(self, node_id: bytes) -> GcsNodeInfo | None: ...

    def alive_nodes(self) -> list[GcsNodeInfo]: ...


class ResourceViews(Protocol):
    """The cluster resource view (the resource manager)."""

    def resource_view(self) -> Mapping[bytes, NodeView]: ...


Persist = Callable[[GcsActor], Awaitable[None]]
OnCreated = Callable[[GcsActor, PushTaskReply], None]
OnFailed = Callable[[GcsActor, int, str], None]


@dataclass
class SchedulerHandlers:
    """What the scheduler calls back into the actor manager."""

    persist: Persist  # store the actor's record (after a lease is granted)
    on_created: OnCreated  # the constructor ran (PushTask answered)
    on_failed: OnFailed  # no node, or the raylet cancelled the lease for good


@dataclass(eq=False)
class _Attempt:
    """One actor's scheduling in progress."""

    actor: GcsActor
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: bool = False
    lease_id: bytes = b""
    raylet: GcsNodeInfo | None = None  # the raylet that granted the worker
    adopt: LeaseIntent | None = None  # a previous leader's lease, to request again first

    def cancel(self) -> None:
        self.cancelled = True
        self.wake.set()


class ActorScheduler:
    """Leases workers and pushes creation tasks; see the module docstring."""

    def __init__(
        self,
        nodes: NodeDirectory,
        views: ResourceViews,
        raylets: RayletClientPool,
        workers: CoreWorkerClientPool,
        *,
        intents: ActorLeaseIntents,
        handlers: SchedulerHandlers,
        lease_retry_s: float = LEASE_RETRY_S,
        create_retry_s: float = CREATE_RETRY_S,
        release_wait_s: float = RELEASE_WAIT_S,
        rng: random.Random | None = None,
    ) -> None:
        self._nodes = nodes
        self._views = views
        self._raylets = raylets
        self._workers = workers
        self.intents = intents
        self._handlers = handlers
        self._lease_retry_s = lease_retry_s
        self._create_retry_s = create_retry_s
        self._release_wait_s = release_wait_s
        self._rng = rng or random.Random()
        self._leasing: dict[bytes, dict[bytes, _Attempt]] = {}  # node -> actor -> attempt
        self._creating: dict[bytes, dict[bytes, _Attempt]] = {}  # node -> worker -> attempt
        self._gated: set[bytes] = set()
        self._adopt: dict[bytes, LeaseIntent] = {}  # actor id -> a previous leader's lease
        self._lease_counter = itertools.count()
        self._tasks = BackgroundTasks("actor_scheduler")

    # -- lifecycle (driven by the actor manager) -----------------------------------------

    async def start(self, init: GcsInitData) -> None:
        """Take over the leases a previous leader may have left at raylets: an actor that
        will be scheduled again asks for its lease again first (same lease id: a raylet
        answers a lease it already granted with that worker, and joins a request to one
        it still queues), the others are cancelled. Leases to the nodes ALIVE now wait
        until their actor workers were released."""
        self._clear()
        alive = {bytes(i): n for i, n in init.nodes.items() if n.state == GcsNodeInfo.ALIVE}
        self._gated = set(alive)
        intents = await self.intents.load()
        waiting = {
            bytes(k) for k, d in init.actors.items() if d.state in (PENDING_CREATION, RESTARTING)
        }
        for intent in intents:
            if intent.actor_id in waiting and intent.node_id in alive:
                self._adopt[intent.actor_id] = intent
        dropped = [i for i in intents if self._adopt.get(i.actor_id) is not i]
        if dropped:
            log.info("cancelling %d actor lease(s) a previous leader left", len(dropped))
            await asyncio.gather(*(self._cancel_intent(alive.get(i.node_id), i) for i in dropped))
            await self.intents.clear_many(i.actor_id for i in dropped)

    def drop_unadopted(self) -> None:
        """After the actors were loaded and resumed: cancel (in the background) the
        previous leader's leases no attempt asked for again."""
        left, self._adopt = list(self._adopt.values()), {}
        for intent in left:
            node = self._nodes.get_alive_node(intent.node_id)
            self._tasks.spawn(self._drop_intent(node, intent), "drop-lease-intent")

    async def _drop_intent(self, node: GcsNodeInfo | None, intent: LeaseIntent) -> None:
        await self._cancel_intent(node, intent)
        try:
            await self.intents.clear(intent.actor_id)
        except GcsHaError as exc:  # the next leader finds it and cancels it again
            log.info("actor %s: lease intent not cleared: %s", intent.actor_id.hex(), exc)

    async def stop(self) -> None:
        """End every attempt (their outbound calls are cancelled) and forget them."""
        for attempt in self._all_attempts():
            attempt.cancel()
        await self._tasks.cancel_all()
        self._clear()

    # -- scheduling ----------------------------------------------------------------------

    def schedule(self, actor: GcsActor) -> None:
        """Find a worker for an actor that has none (Ray's Schedule)."""
        attempt = _Attempt(actor, adopt=self._adopt.pop(actor.actor_id, None))
        node = self._place(attempt)
        if node is not None:
            self._spawn(lambda: self._lease_and_create(attempt, node), actor)

    def reschedule(self, actor: GcsActor) -> None:
        """Carry on with an actor: straight to PushTask when it already has a leased
        worker (after a failover), else schedule it (Ray's Reschedule)."""
        if not actor.worker_id:
            self.schedule(actor)
            return
        attempt = _Attempt(actor, raylet=self._nodes.get_alive_node(actor.node_id))
        self._creating.setdefault(actor.node_id, {})[actor.worker_id] = attempt
        address, resources = actor.data.address, list(actor.data.resource_mapping)
        self._spawn(lambda: self._resume(attempt, address, resources), actor)

    def cancel_on_node(self, node_id: bytes) -> list[bytes]:
        """Stop every attempt leasing from or creating on a dead node; their actor ids."""
        attempts = [
            *self._leasing.pop(bytes(node_id), {}).values(),
            *self._creating.pop(bytes(node_id), {}).values(),
        ]
        for attempt in attempts:
            attempt.cancel()
        return [attempt.actor.actor_id for attempt in attempts]

    def cancel_on_worker(self, node_id: bytes, worker_id: bytes) -> bytes | None:
        """Stop the attempt creating an actor on a dead worker; its actor id, if any."""
        workers = self._creating.get(bytes(node_id), {})
        attempt = workers.pop(bytes(worker_id), None)
        if not workers:
            self._creating.pop(bytes(node_id), None)
        if attempt is None:
            return None
        attempt.cancel()
        return attempt.actor.actor_id

    def cancel_on_leasing(self, node_id: bytes, actor_id: bytes) -> bool:
        """Stop an actor's lease request at a raylet (CancelWorkerLease in the
        background); False when it was not leasing there."""
        actors = self._leasing.get(bytes(node_id), {})
        attempt = actors.pop(bytes(actor_id), None)
        if not actors:
            self._leasing.pop(bytes(node_id), None)
        if attempt is None:
            return False
        attempt.cancel()
        node = self._nodes.get_alive_node(node_id)
        if node is not None and attempt.lease_id:
            self._tasks.spawn(self._cancel_lease(node, attempt.lease_id), "cancel-lease")
        return True

    # -- reads -------------------------------------------------------------------------

    def is_scheduling(self, actor_id: bytes) -> bool:
        """Whether an attempt for the actor is leasing or creating."""
        return any(a.actor.actor_id == bytes(actor_id) for a in self._all_attempts())

    def workers_in_creation(self, node_id: bytes) -> list[bytes]:
        """The workers of a node leased for actors whose constructor has not returned."""
        return list(self._creating.get(bytes(node_id), {}))

    def num_leasing(self) -> int:
        return sum(len(actors) for actors in self._leasing.values())

    def num_creating(self) -> int:
        return sum(len(workers) for workers in self._creating.values())

    # -- the lease ---------------------------------------------------------------------

    def _place(self, attempt: _Attempt) -> GcsNodeInfo | None:
        """Choose the forwarding raylet and index the attempt there; None (and the
        failure handler) when no node is ALIVE."""
        actor = attempt.actor
        alive = {bytes(node.node_id): node for node in self._nodes.alive_nodes()}
        if attempt.adopt is not None and attempt.adopt.node_id in alive:
            node_id: bytes | None = attempt.adopt.node_id
        else:
            node_id = select_forwarding_node(actor, alive, self._views.resource_view(), self._rng)
        if node_id is None:
            self._handlers.on_failed(actor, SCHEDULING_FAILED, NO_NODES_MESSAGE)
            return None
        actor.set_address(Address(node_id=node_id))
        actor.grant_or_reject = False
        self._leasing.setdefault(node_id, {})[actor.actor_id] = attempt
        return alive[node_id]

    async def _lease_and_create(self, attempt: _Attempt, node: GcsNodeInfo | None) -> None:
        while node is not None:
            reply = await self._request_lease(attempt, node)
            if reply is None:
                return
            node = await self._on_lease_reply(attempt, node, reply)

    async def _request_lease(
        self, attempt: _Attempt, node: GcsNodeInfo
    ) -> RequestWorkerLeaseReply | None:
        """RequestWorkerLease at `node` until it answers; None once the attempt stopped
        leasing there."""
        actor, node_id = attempt.actor, bytes(node.node_id)
        while self._is_leasing(attempt, node_id):
            if node_id in self._gated:
                released = self._raylets.wait_actor_workers_released(node_id, self._release_wait_s)
                await self._until_woken(attempt, released)
                self._gated.discard(node_id)
                continue
            lease_id = self._lease_id_at(attempt, node_id)
            try:
                await self.intents.record(actor.actor_id, node_id, lease_id)
            except GcsHaError as exc:
                log.warning("actor %s: lease intent not written: %s", actor.actor_id.hex(), exc)
                await self._sleep(attempt, self._lease_retry_s)
                continue
            if not self._is_leasing(attempt, node_id):
                return None
            attempt.lease_id = lease_id
            try:
                reply = await self._raylets.request_worker_lease(
                    node, actor.lease_spec(lease_id), actor.grant_or_reject
                )
            except GcsHaError as exc:
                log.info("actor %s: lease failed, retrying: %s", actor.actor_id.hex(), exc)
                self._tasks.spawn(self._cancel_lease(node, lease_id), "cancel-lease")
                await self._sleep(attempt, self._lease_retry_s)
                continue
            if not self._is_leasing(attempt, node_id):
                self._release_stray_grant(node, reply)
                return None
            return reply
        return None

    async def _on_lease_reply(
        self, attempt: _Attempt, node: GcsNodeInfo, reply: RequestWorkerLeaseReply
    ) -> GcsNodeInfo | None:
        """Act on a lease reply; the next raylet to lease from, or None when done."""
        actor = attempt.actor
        granted = bool(reply.worker_address.node_id)
        spillback = bool(reply.retry_at_raylet_address.node_id)
        if not reply.canceled and not granted and not spillback and not reply.rejected:
            return None  # cancelled by a kill, which reschedules the actor itself
        self._stop_leasing(attempt, node.node_id)
        if reply.canceled:
            log.info("actor %s: lease canceled by the raylet", actor.actor_id.hex())
            self._handlers.on_failed(actor, reply.failure_type, reply.scheduling_failure_message)
            return None
        if reply.rejected:
            actor.set_address(None)
            return self._place(attempt)
        if not granted:
            return self._spill_back(attempt, reply.retry_at_raylet_address)
        await self._on_granted(attempt, node, reply)
        return None

    def _spill_back(self, attempt: _Attempt, target: Address) -> GcsNodeInfo | None:
        actor = attempt.actor
        node = self._nodes.get_alive_node(target.node_id)
        if node is None:  # the raylet we were sent to is gone: choose again
            actor.set_address(None)
            actor.data.ClearField("resource_mapping")
            return self._place(attempt)
        actor.set_address(target)
        actor.grant_or_reject = True  # the spillback target grants or rejects, no ping-pong
        self._leasing.setdefault(bytes(node.node_id), {})[actor.actor_id] = attempt
        return node

    # -- the creation ------------------------------------------------------------------

    async def _on_granted(
        self, attempt: _Attempt, node: GcsNodeInfo, reply: RequestWorkerLeaseReply
    ) -> None:
        actor, worker = attempt.actor, reply.worker_address
        attempt.raylet = node
        self._creating.setdefault(bytes(worker.node_id), {})[bytes(worker.worker_id)] = attempt
        actor.set_address(worker)
        actor.data.pid = reply.worker_pid
        actor.data.ClearField("resource_mapping")
        actor.data.resource_mapping.extend(reply.resource_mapping)
        actor.spec.lease_grant_timestamp_ms = int(time.time() * 1000)
        log.debug("actor %s: worker %s leased", actor.actor_id.hex(), worker.worker_id.hex())
        while self._is_creating(attempt, worker):
            try:
                await self._handlers.persist(actor)
                break
            except GcsHaError as exc:
                log.warning("actor %s: record not written: %s", actor.actor_id.hex(), exc)
                await self._sleep(attempt, self._lease_retry_s)
        if actor.state == DEAD:
            return
        await self._create(attempt, worker, list(reply.resource_mapping))

    async def _resume(
        self, attempt: _Attempt, worker: Address, resources: list[ResourceMapEntry]
    ) -> None:
        """After a failover: a previous leader may have pushed the creation task to this
        worker already, and a second push would crash it (Ray's core worker sets an actor
        up once). Ask the worker: hosting the actor with nothing running means the
        constructor ran (created); still running, wait; not hosting it, push."""
        actor = attempt.actor
        while self._is_creating(attempt, worker):
            try:
                stats = await self._workers.get_core_worker_stats(worker)
            except GcsHaError as exc:
                log.debug("actor %s: worker stats: %s", actor.actor_id.hex(), exc)
                await self._sleep(attempt, self._create_retry_s)
                continue
            if bytes(stats.actor_id) != actor.actor_id:
                await self._create(attempt, worker, resources)
                return
            if stats.num_running_tasks == 0 and self._is_creating(attempt, worker):
                log.info("actor %s was created before the failover", actor.actor_id.hex())
                self._stop_creating(worker)
                self._handlers.on_created(
                    actor, PushTaskReply(actor_repr_name=actor.data.repr_name)
                )
                return
            await self._sleep(attempt, self._create_retry_s)

    async def _create(
        self, attempt: _Attempt, worker: Address, resources: list[ResourceMapEntry]
    ) -> None:
        """PushTask of the creation task until the worker answers (Ray's
        CreateActorOnWorker and its retries)."""
        actor = attempt.actor
        request = PushTaskRequest(intended_worker_id=worker.worker_id, resource_mapping=resources)
        request.task_spec.CopyFrom(actor.spec)
        while self._is_creating(attempt, worker):
            try:
                reply = await self._workers.push_task(worker, request)
            except GcsHaError as exc:
                log.debug("actor %s: PushTask failed, retrying: %s", actor.actor_id.hex(), exc)
                await self._sleep(attempt, self._create_retry_s)
                continue
            if self._is_creating(attempt, worker):
                self._stop_creating(worker)
                self._handlers.on_created(actor, reply)
            else:
                self._kill_stray_worker(attempt, worker, actor.actor_id)
            return
        self._kill_stray_worker(attempt, worker, NIL_ACTOR_ID)

    # -- cleanup of leases and workers nobody wants ----------------------------------

    def _release_stray_grant(self, node: GcsNodeInfo, reply: RequestWorkerLeaseReply) -> None:
        """A lease granted to an attempt that was cancelled meanwhile: kill its worker."""
        if reply.worker_address.worker_id:
            self._tasks.spawn(
                self._kill(node, NIL_ACTOR_ID, bytes(reply.worker_address.worker_id)),
                "kill-stray-worker",
            )

    def _kill_stray_worker(self, attempt: _Attempt, worker: Address, actor_id: bytes) -> None:
        node = attempt.raylet or self._nodes.get_alive_node(worker.node_id)
        if node is not None and worker.worker_id:
            self._tasks.spawn(
                self._kill(node, actor_id, bytes(worker.worker_id)), "kill-stray-worker"
            )

    async def _kill(self, node: GcsNodeInfo, actor_id: bytes, worker_id: bytes) -> None:
        try:
            await self._raylets.kill_local_actor(node, actor_id, worker_id, True, None)
        except GcsHaError as exc:
            log.info("killing leased worker %s: %s", worker_id.hex(), exc)

    async def _cancel_lease(self, node: GcsNodeInfo, lease_id: bytes) -> None:
        try:
            await self._raylets.cancel_worker_lease(node, lease_id)
        except GcsHaError as exc:
            log.debug("CancelWorkerLease to %s: %s", node.node_id.hex(), exc)

    async def _cancel_intent(self, node: GcsNodeInfo | None, intent: LeaseIntent) -> None:
        if node is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._cancel_lease(node, intent.lease_id), TAKEOVER_CANCEL_TIMEOUT_S
            )

    # -- internals ---------------------------------------------------------------------

    def _is_leasing(self, attempt: _Attempt, node_id: bytes) -> bool:
        leasing = self._leasing.get(bytes(node_id), {})
        return not attempt.cancelled and leasing.get(attempt.actor.actor_id) is attempt

    def _is_creating(self, attempt: _Attempt, worker: Address) -> bool:
        creating = self._creating.get(bytes(worker.node_id), {})
        return not attempt.cancelled and creating.get(bytes(worker.worker_id)) is attempt

    def _stop_leasing(self, attempt: _Attempt, node_id: bytes) -> None:
        actors = self._leasing.get(bytes(node_id))
        if actors is not None and actors.get(attempt.actor.actor_id) is attempt:
            del actors[attempt.actor.actor_id]
            if not actors:
                del self._leasing[bytes(node_id)]

    def _stop_creating(self, worker: Address) -> None:
        workers = self._creating.get(bytes(worker.node_id))
        if workers is not None:
            workers.pop(bytes(worker.worker_id), None)
            if not workers:
                del self._creating[bytes(worker.node_id)]

    def _new_lease_id(self) -> bytes:
        """A fresh 32-byte lease id (Ray's LeaseID: a counter and a random worker id)."""
        counter = next(self._lease_counter) & 0xFFFFFFFF
        return counter.to_bytes(4, "little") + os.urandom(28)

    async def _sleep(self, attempt: _Attempt, seconds: float) -> None:
        """Sleep, or less if the attempt is cancelled meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(attempt.wake.wait(), seconds)

    async def _until_woken(self, attempt: _Attempt, awaitable: Awaitable[None]) -> None:
        """Wait for `awaitable`, or less if the attempt is cancelled meanwhile."""
        work = asyncio.ensure_future(awaitable)
        woken = asyncio.ensure_future(attempt.wake.wait())
        await asyncio.wait({work, woken}, return_when=asyncio.FIRST_COMPLETED)
        for future in (work, woken):
            future.cancel()

    def _spawn(self, work: Callable[[], Coroutine[Any, Any, None]], actor: GcsActor) -> None:
        """Run `work()` as the actor's scheduling task (the coroutine is made when the
        task starts, so a task cancelled before it ran leaves nothing unawaited)."""
        self._tasks.spawn(self._quietly(work, actor), f"schedule:{actor.actor_id.hex()}")

    async def _quietly(
        self, work: Callable[[], Coroutine[Any, Any, None]], actor: GcsActor
    ) -> None:
        try:
            await work()
        except GcsHaError as exc:  # the store or a raylet failed for good: log, end
            log.warning("scheduling actor %s stopped: %s", actor.actor_id.hex(), exc)

    def _all_attempts(self) -> list[_Attempt]:
        return [
            *(a for actors in self._leasing.values() for a in actors.values()),
            *(a for workers in self._creating.values() for a in workers.values()),
        ]

    def _lease_id_at(self, attempt: _Attempt, node_id: bytes) -> bytes:
        """The previous leader's lease id for the attempt's first request to its node,
        else a new one."""
        adopt, attempt.adopt = attempt.adopt, None
        if adopt is not None and adopt.node_id == node_id:
            return adopt.lease_id
        if adopt is not None:  # leasing elsewhere: the old request must not be granted
            node = self._nodes.get_alive_node(adopt.node_id)
            self._tasks.spawn(self._cancel_intent(node, adopt), "cancel-lease")
        return self._new_lease_id()

    def _clear(self) -> None:
        self._adopt.clear()
        self._leasing.clear()
        self._creating.clear()
        self._gated.clear()
