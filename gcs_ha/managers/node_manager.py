"""The node manager (Ray's GcsNodeManager): the cluster's raylets, alive and dead: the node
table, registration, death, the per-term activity of each node, and what a new leader
tells every raylet (`on_leader_started`). Transitions and their events: DESIGN.md,
"Module notes".

Errors: InvalidRequestError (a node id that is not 28 bytes in RegisterNode or
UnregisterNode); the store's errors (NotLeaderError, UnknownOutcomeError, ...) from
writes, after which the maps are unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gcs_ha.errors import GcsHaError, InvalidRequestError
from gcs_ha.managers.health_check_manager import HealthCheckManager
from gcs_ha.managers.manager import BackgroundTasks, GcsInitData
from gcs_ha.managers.node_states import inferred_death, snapshot_after
from gcs_ha.managers.ports import Publisher, RayletClientPool
from gcs_ha.managers.system_config import Setting, apply_settings
from gcs_ha.proto.ray import pubsub_pb2
from gcs_ha.proto.ray.autoscaler_pb2 import DrainNodeRequest
from gcs_ha.proto.ray.common_pb2 import Bundle, NodeDeathInfo
from gcs_ha.proto.ray.gcs_pb2 import (
    ErrorTableData,
    GcsNodeAddressAndLiveness,
    GcsNodeInfo,
    NodeSnapshot,
)
from gcs_ha.proto.ray.gcs_service_pb2 import GetAllNodeInfoRequest
from gcs_ha.proto.ray.ray_syncer_pb2 import ResourceViewSyncMessage
from gcs_ha.storage.tables import GcsTableStorage

log = logging.getLogger(__name__)

NODE_ID_BYTES = 28
NIL_JOB_ID = b"\xff" * 4  # Ray's JobID::Nil()
MAX_DEAD_NODES = 1000  # maximum_gcs_dead_node_cached_count
ALIVE, DEAD = GcsNodeInfo.ALIVE, GcsNodeInfo.DEAD

NodeListener = Callable[[GcsNodeInfo], Coroutine[Any, Any, None] | None]
NodeSelector = GetAllNodeInfoRequest.NodeSelector

SETTINGS = {"maximum_gcs_dead_node_cached_count": Setting("_max_dead")}  # Ray's system config


class NodeRayletClients(RayletClientPool, Protocol):
    """The raylet calls the node manager makes: the pool's, plus ShutdownRaylet."""

    async def shutdown_raylet(self, node: GcsNodeInfo, graceful: bool) -> None: ...


@dataclass(frozen=True)
class NodeList:
    """A query's nodes, and how many nodes the manager knows in all."""

    nodes: list[GcsNodeInfo]
    total: int


class NodeManager:
    """Registers, lists and buries raylets; see the module docstring."""

    def __init__(
        self,
        tables: GcsTableStorage,
        publisher: Publisher,
        pool: NodeRayletClients,
        health: HealthCheckManager,
        *,
        max_dead_nodes: int = MAX_DEAD_NODES,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._tables = tables
        self._publisher = publisher
        self._pool = pool
        self._health = health
        self._max_dead = max_dead_nodes
        self._clock_ms = clock_ms
        self._alive: dict[bytes, GcsNodeInfo] = {}
        self._dead: dict[bytes, GcsNodeInfo] = {}  # oldest death first
        self._locks: dict[bytes, asyncio.Lock] = {}
        self._draining: dict[bytes, DrainNodeRequest] = {}
        self._added: list[NodeListener] = []
        self._removed: list[NodeListener] = []
        self._workers_in_use: Callable[[bytes], Iterable[bytes]] = lambda _: ()
        self._bundles_in_use: Callable[[bytes], Iterable[Bundle]] = lambda _: ()
        self._tasks = BackgroundTasks("node")
        health.set_death_handler(self.on_node_failure)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        return "node"

    async def start(self, init: GcsInitData) -> None:
        """Rebuild the ALIVE and DEAD maps from the node table (dead: by end time)."""
        self._alive.clear()
        self._dead.clear()
        self._locks.clear()
        self._draining.clear()
        dead: list[tuple[bytes, GcsNodeInfo]] = []
        for node_id, node in init.nodes.items():
            if node.state == ALIVE:
                self._alive[bytes(node_id)] = node
            else:
                dead.append((bytes(node_id), node))
        for node_id, node in sorted(dead, key=lambda pair: pair[1].end_time_ms):
            self._dead[node_id] = node

    async def stop(self) -> None:
        """Cancel the background work (restart notices, drains, listeners); drop state."""
        await self._tasks.cancel_all()
        self._alive.clear()
        self._dead.clear()
        self._locks.clear()
        self._draining.clear()

    async def on_leader_started(self, init: GcsInitData | None = None) -> None:
        """After serving began: greet every ALIVE raylet (NotifyGCSRestart and
        ReleaseUnused*, in the background) and start its health checks with their grace
        period. Returns at once. `init` is accepted so this can be a GcsServer hook."""
        for node in list(self._alive.values()):
            self._health.add_node(node)
            self._tasks.spawn(self._greet(node), f"restart:{node.node_id.hex()[:12]}")

    def apply_system_config(self, config: Mapping[str, Any]) -> None:
        """Ray's settings of this manager in the head's system config (SETTINGS)."""
        apply_settings(self, config, SETTINGS)

    def set_in_use_providers(
        self,
        workers: Callable[[bytes], Iterable[bytes]] | None = None,
        bundles: Callable[[bytes], Iterable[Bundle]] | None = None,
    ) -> None:
        """Where the actor and placement group managers say, per node id, which actor
        workers and bundles are still in use (sent with ReleaseUnused* at leader start)."""
        if workers is not None:
            self._workers_in_use = workers
        if bundles is not None:
            self._bundles_in_use = bundles

    def add_node_added_listener(self, listener: NodeListener) -> None:
        """Call `listener(node)` for every node registered from now on, in every term
        (listeners are kept across stop/start; nodes known at start are not announced:
        their owners rebuild from GcsInitData.nodes)."""
        self._added.append(listener)

    def add_node_removed_listener(self, listener: NodeListener) -> None:
        """Call `listener(dead_node)` for every node that dies from now on, in every term."""
        self._removed.append(listener)

    def set_node_snapshot(self, node_id: bytes, snapshot: NodeSnapshot) -> None:
        """Record an ALIVE node's activity as last reported (the syncer's resource view,
        Ray's UpdateAliveNode). In memory only, like Ray's: not written, not published."""
        node = self._alive.get(bytes(node_id))
        if node is not None:
            updated = GcsNodeInfo()
            updated.CopyFrom(node)
            updated.state_snapshot.CopyFrom(snapshot)
            self._alive[bytes(node_id)] = updated

    def update_alive_node(self, node_id: bytes, view: ResourceViewSyncMessage) -> None:
        """A resource view from an ALIVE node's raylet: its state snapshot follows it
        (Ray's UpdateAliveNode)."""
        node = self._alive.get(bytes(node_id))
        if node is not None:
            self.set_node_snapshot(node_id, snapshot_after(view, node.state_snapshot))

    def set_node_draining(self, node_id: bytes, request: DrainNodeRequest) -> None:
        """The node's raylet accepted the autoscaler's drain `request`: kept (the first
        one) until the node dies, to tell a preemption from a crash."""
        if bytes(node_id) in self._alive and bytes(node_id) not in self._draining:
            kept = DrainNodeRequest()
            kept.CopyFrom(request)
            self._draining[bytes(node_id)] = kept

    # -- reads -------------------------------------------------------------------------

    def get_alive_node(self, node_id: bytes) -> GcsNodeInfo | None:
        return self._alive.get(bytes(node_id))

    def get_dead_node(self, node_id: bytes) -> GcsNodeInfo | None:
        return self._dead.get(bytes(node_id))

    def alive_nodes(self) -> list[GcsNodeInfo]:
        return list(self._alive.values())

    def check_alive(self, node_ids: Iterable[bytes]) -> list[bool]:
        """For each id, whether that node is ALIVE (CheckAlive)."""
        return [bytes(node_id) in self._alive for node_id in node_ids]

    def get_all_node_info(
        self, limit: int | None, selectors: Sequence[NodeSelector], state_filter: int | None
    ) -> NodeList:
        """Nodes matching any selector (all when none), of the state asked, at most
        `limit` (none or <= 0: no limit); ALIVE ones first."""
        ids: dict[bytes, None] = {}
        names: set[str] = set()
        addresses: set[str] = set()
        heads: set[bool] = set()
        for selector in selectors:
            kind = selector.WhichOneof("node_selector")
            if kind == "node_id":
                ids[bytes(selector.node_id)] = None
            elif kind == "node_name":
                names.add(selector.node_name)
            elif kind == "node_ip_address":
                addresses.add(selector.node_ip_address)
            elif kind == "is_head_node":
                heads.add(selector.is_head_node)
        if selectors and not (names or addresses or heads):
            return self._list(self._pick(state_filter, limit, ids=list(ids)))

        def match(node: GcsNodeInfo) -> bool:
            return (
                not selectors
                or node.node_id in ids
                or node.node_name in names
                or node.node_manager_address in addresses
                or node.is_head_node in heads
            )

        return self._list(self._pick(state_filter, limit, match=match))

    def get_all_node_address_and_liveness(
        self, node_ids: Sequence[bytes], limit: int | None, state_filter: int | None
    ) -> list[GcsNodeAddressAndLiveness]:
        """The light records of the nodes named (all when none), of the state asked."""
        ids = list(dict.fromkeys(bytes(i) for i in node_ids)) if node_ids else None
        return [address_and_liveness(n) for n in self._pick(state_filter, limit, ids=ids)]

    # -- transitions -------------------------------------------------------------------

    async def register_node(self, info: GcsNodeInfo) -> None:
        """Make a new node ALIVE (RegisterNode); a node already known is left alone."""
        node_id = _checked_id(info.node_id)
        if info.is_head_node:
            for old in [n for n in self._alive.values() if n.is_head_node]:
                if old.node_id != node_id:
                    log.info("head node %s replaces %s", node_id.hex(), old.node_id.hex())
                    await self.on_node_failure(old.node_id)
        async with self._lock(node_id):
            if node_id in self._alive or node_id in self._dead:
                return
            record = GcsNodeInfo()
            record.CopyFrom(info)
            record.state = ALIVE
            await self._tables.node_table.put(node_id, record)
            self._alive[node_id] = record
            log.info("node %s registered (%s)", node_id.hex(), record.node_manager_address)
            self._publish(record)  # under the lock: a death cannot be announced first
            self._health.add_node(record)
            self._notify(self._added, record)

    async def unregister_node(self, node_id: bytes, death_info: NodeDeathInfo) -> None:
        """A raylet leaving (UnregisterNode): DEAD with the death_info it gave."""
        await self._mark_dead(_checked_id(node_id), death_info)

    async def on_node_failure(self, node_id: bytes) -> None:
        """A node that failed its health checks (or an old head replaced): DEAD, as a
        preemption when it was drained for one, else UNEXPECTED_TERMINATION."""
        drain = self._draining.get(bytes(node_id))
        await self._mark_dead(bytes(node_id), inferred_death(drain, self._clock_ms()))

    def drain_nodes(self, node_ids: Iterable[bytes]) -> list[bytes]:
        """Legacy DrainNode: ask each ALIVE raylet to shut down gracefully (background);
        returns the ids asked for."""
        asked = [bytes(i) for i in node_ids]
        for node_id in asked:
            node = self._alive.get(node_id)
            if node is None:
                log.info("drain of node %s skipped: not alive", node_id.hex())
                continue
            self._tasks.spawn(self._drain(node), f"drain:{node_id.hex()[:12]}")
        return asked

    # -- internals ---------------------------------------------------------------------

    async def _mark_dead(self, node_id: bytes, death_info: NodeDeathInfo) -> None:
        async with self._lock(node_id):
            alive = self._alive.get(node_id)
            if alive is None:
                return
            dead = GcsNodeInfo()
            dead.CopyFrom(alive)
            dead.state = DEAD
            dead.end_time_ms = self._clock_ms()
            dead.death_info.CopyFrom(death_info)
            await self._tables.node_table.put(node_id, dead)
            del self._alive[node_id]
            self._draining.pop(node_id, None)
            self._add_dead(dead)
            log.info(
                "node %s is dead: %s %s",
                node_id.hex(),
                NodeDeathInfo.Reason.Name(death_info.reason),
                death_info.reason_message,
            )
            self._health.remove_node(node_id)
            self._pool.forget(node_id)
            self._publish(dead)
            if death_info.reason == NodeDeathInfo.UNEXPECTED_TERMINATION:
                self._publish_node_removed(dead)
            self._notify(self._removed, dead)

    def _add_dead(self, node: GcsNodeInfo) -> None:
        self._dead[bytes(node.node_id)] = node
        while len(self._dead) > self._max_dead:
            oldest = next(iter(self._dead))
            del self._dead[oldest]
            self._locks.pop(oldest, None)
            self._tasks.spawn(self._tables.node_table.delete(oldest), "evict-dead-node")

    def _lock(self, node_id: bytes) -> asyncio.Lock:
        return self._locks.setdefault(node_id, asyncio.Lock())

    def _pick(
        self,
        state_filter: int | None,
        limit: int | None,
        ids: Collection[bytes] | None = None,
        match: Callable[[GcsNodeInfo], bool] | None = None,
    ) -> list[GcsNodeInfo]:
        """Nodes of the state asked (ALIVE first), among `ids` if given, that `match`."""
        cap = limit if limit is not None and limit > 0 else sys.maxsize
        maps: dict[int | None, tuple[dict[bytes, GcsNodeInfo], ...]] = {
            None: (self._alive, self._dead),
            ALIVE: (self._alive,),
            DEAD: (self._dead,),
        }
        picked: list[GcsNodeInfo] = []
        for nodes in maps.get(state_filter, ()):
            found = nodes.values() if ids is None else (nodes[i] for i in ids if i in nodes)
            for node in found:
                if len(picked) >= cap:
                    return picked
                if match is None or match(node):
                    picked.append(node)
        return picked

    def _list(self, nodes: list[GcsNodeInfo]) -> NodeList:
        return NodeList(nodes, len(self._alive) + len(self._dead))

    def _publish(self, node: GcsNodeInfo) -> None:
        key = bytes(node.node_id)
        info = pubsub_pb2.PubMessage(channel_type=pubsub_pb2.GCS_NODE_INFO_CHANNEL, key_id=key)
        info.node_info_message.CopyFrom(node)
        self._publisher.publish(info)
        live = pubsub_pb2.PubMessage(
            channel_type=pubsub_pb2.GCS_NODE_ADDRESS_AND_LIVENESS_CHANNEL, key_id=key
        )
        live.node_address_and_liveness_message.CopyFrom(address_and_liveness(node))
        self._publisher.publish(live)

    def _publish_node_removed(self, node: GcsNodeInfo) -> None:
        text = (
            f"The node with node id: {node.node_id.hex()} and address: "
            f"{node.node_manager_address} and node name: {node.node_name} has been marked "
            "dead because the detector has missed too many heartbeats from it. This can "
            "happen when a \t(1) raylet crashes unexpectedly (OOM, etc.) \n\t(2) raylet has "
            "lagging heartbeats due to slow network or busy workload."
        )
        error = ErrorTableData(
            job_id=NIL_JOB_ID, type="node_removed", error_message=text, timestamp=self._clock_ms()
        )
        message = pubsub_pb2.PubMessage(
            channel_type=pubsub_pb2.RAY_ERROR_INFO_CHANNEL, key_id=node.node_id.hex().encode()
        )
        message.error_info_message.CopyFrom(error)
        self._publisher.publish(message)

    def _notify(self, listeners: list[NodeListener], node: GcsNodeInfo) -> None:
        for listener in listeners:
            try:
                result = listener(node)
            except Exception:
                log.exception("node listener %r failed", listener)
                continue
            if result is not None:
                self._tasks.spawn(result, "node-listener")

    async def _drain(self, node: GcsNodeInfo) -> None:
        try:
            await self._pool.shutdown_raylet(node, True)
        except GcsHaError as exc:
            log.warning("drain of node %s: %s", node.node_id.hex()[:12], exc)

    async def _greet(self, node: GcsNodeInfo) -> None:
        """The calls a raylet gets from a GCS that (re)started (ray-gcs-contract.md 10)."""
        node_id = bytes(node.node_id)
        results = await asyncio.gather(
            self._pool.notify_gcs_restart(node),
            self._pool.release_unused_actor_workers(node, list(self._workers_in_use(node_id))),
            self._pool.release_unused_bundles(node, list(self._bundles_in_use(node_id))),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, GcsHaError):
                log.warning("restart notice to node %s: %s", node_id.hex()[:12], result)
            elif isinstance(result, BaseException):
                raise result


def address_and_liveness(node: GcsNodeInfo) -> GcsNodeAddressAndLiveness:
    """The light form of a node record (GCS_NODE_ADDRESS_AND_LIVENESS_CHANNEL)."""
    light = GcsNodeAddressAndLiveness(
        node_id=node.node_id,
        node_manager_address=node.node_manager_address,
        node_manager_port=node.node_manager_port,
        object_manager_port=node.object_manager_port,
        state=node.state,
    )
    if node.HasField("death_info"):
        light.death_info.CopyFrom(node.death_info)
    return light


def _checked_id(node_id: bytes) -> bytes:
    if len(node_id) != NODE_ID_BYTES:
        raise InvalidRequestError(f"a node id has {NODE_ID_BYTES} bytes, not {len(node_id)}")
    return bytes(node_id)
