"""The actor manager's in-memory indexes (Ray's GcsActorManager maps: `registered`,
`destroyed`, `named`, `unresolved`, `pending`, `created`, `owners`), rebuilt from the
actor tables at every leader start. Pure bookkeeping: no I/O, no event loop. What each
index holds: actors/DESIGN.md, "Module notes".
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from gcs_ha.managers.actors.gcs_actor import GcsActor
from gcs_ha.proto.ray.common_pb2 import Address
from gcs_ha.proto.ray.gcs_pb2 import ActorTableData

MAX_DESTROYED = 100_000  # Ray's maximum_gcs_destroyed_actor_cached_count

NodeWorkerIndex = dict[bytes, dict[bytes, set[bytes]]]


class ActorRegistry:
    """The indexes described in actors/DESIGN.md, "Module notes"."""

    def __init__(self, max_destroyed: int = MAX_DESTROYED) -> None:
        self.max_destroyed = max_destroyed
        self.registered: dict[bytes, GcsActor] = {}
        self.destroyed: OrderedDict[bytes, bytes] = OrderedDict()
        self.named: dict[str, dict[str, bytes]] = {}
        self.unresolved: NodeWorkerIndex = {}
        self.pending: dict[bytes, GcsActor] = {}
        self.created: dict[bytes, dict[bytes, bytes]] = {}
        self.owners: NodeWorkerIndex = {}
        self.owner_addresses: dict[tuple[bytes, bytes], Address] = {}

    def clear(self) -> None:
        for index in (
            self.registered,
            self.destroyed,
            self.named,
            self.unresolved,
            self.pending,
            self.created,
            self.owners,
            self.owner_addresses,
        ):
            index.clear()

    # -- lookups -------------------------------------------------------------------------

    def get(self, actor_id: bytes) -> GcsActor | None:
        """A registered actor."""
        return self.registered.get(bytes(actor_id))

    def record(self, actor_id: bytes) -> ActorTableData | None:
        """The record of a registered (not a copy) or destroyed actor."""
        actor = self.registered.get(bytes(actor_id))
        if actor is not None:
            return actor.data
        raw = self.destroyed.get(bytes(actor_id))
        return None if raw is None else ActorTableData.FromString(raw)

    def all_records(self) -> Iterator[ActorTableData]:
        """Registered actors' records (not copies), then destroyed ones'."""
        for actor in self.registered.values():
            yield actor.data
        for raw in self.destroyed.values():
            yield ActorTableData.FromString(raw)

    def workers_in_use(self, node_id: bytes) -> list[bytes]:
        """The workers of a node that registered actors hold (alive, or leased and
        being created): what ReleaseUnusedActorWorkers must spare."""
        node_id = bytes(node_id)
        return [
            actor.worker_id
            for actor in self.registered.values()
            if actor.worker_id and actor.node_id == node_id
        ]

    # -- names ---------------------------------------------------------------------------

    def named_actor(self, namespace: str, name: str) -> bytes | None:
        return self.named.get(namespace, {}).get(name)

    def add_name(self, actor: GcsActor) -> None:
        if actor.name:
            self.named.setdefault(actor.namespace, {})[actor.name] = actor.actor_id

    def remove_name(self, actor: GcsActor) -> None:
        names = self.named.get(actor.namespace)
        if not actor.name or names is None:
            return
        if names.get(actor.name) == actor.actor_id:
            del names[actor.name]
        if not names:
            del self.named[actor.namespace]

    # -- unresolved and owned actors ---------------------------------------------------

    def add_unresolved(self, actor: GcsActor) -> None:
        _add(self.unresolved, actor.owner_node_id, actor.owner_worker_id, actor.actor_id)

    def remove_unresolved(self, actor: GcsActor) -> None:
        _discard(self.unresolved, actor.owner_node_id, actor.owner_worker_id, actor.actor_id)

    def unresolved_of(self, node_id: bytes, worker_id: bytes | None = None) -> list[bytes]:
        """Unresolved actors owned by a worker (or by any worker of the node)."""
        return _members(self.unresolved, node_id, worker_id)

    def add_owned(self, actor: GcsActor) -> None:
        key = (actor.owner_node_id, actor.owner_worker_id)
        self.owner_addresses.setdefault(key, actor.owner_address)
        _add(self.owners, *key, actor.actor_id)

    def remove_owned(self, actor: GcsActor) -> None:
        key = (actor.owner_node_id, actor.owner_worker_id)
        _discard(self.owners, *key, actor.actor_id)
        if actor.owner_worker_id not in self.owners.get(actor.owner_node_id, {}):
            self.owner_addresses.pop(key, None)

    def owns(self, actor: GcsActor) -> bool:
        """Whether the actor's owner is still registered as owning it."""
        children = self.owners.get(actor.owner_node_id, {}).get(actor.owner_worker_id, ())
        return actor.actor_id in children

    def children_of(self, node_id: bytes, worker_id: bytes) -> list[bytes]:
        """The actors a worker owns."""
        return _members(self.owners, node_id, worker_id)

    def owners_on(self, node_id: bytes) -> list[tuple[bytes, bytes]]:
        """(owner worker id, actor id) of every actor owned by a worker of the node."""
        workers = self.owners.get(bytes(node_id), {})
        return [(worker, child) for worker, children in workers.items() for child in children]

    # -- created actors ------------------------------------------------------------------

    def add_created(self, actor: GcsActor) -> None:
        self.created.setdefault(actor.node_id, {})[actor.worker_id] = actor.actor_id

    def is_created(self, actor: GcsActor) -> bool:
        return self.created.get(actor.node_id, {}).get(actor.worker_id) == actor.actor_id

    def pop_created(self, node_id: bytes, worker_id: bytes) -> bytes | None:
        """Forget the actor created on a worker; its id, if any."""
        workers = self.created.get(bytes(node_id))
        if workers is None:
            return None
        actor_id = workers.pop(bytes(worker_id), None)
        if not workers:
            del self.created[bytes(node_id)]
        return actor_id

    def pop_created_on(self, node_id: bytes) -> list[bytes]:
        """Forget every actor created on a node; their ids."""
        return list(self.created.pop(bytes(node_id), {}).values())

    # -- destroyed actors ------------------------------------------------------------

    def add_destroyed(self, record: ActorTableData) -> list[bytes]:
        """Keep a destroyed actor's record; the ids evicted over the cap (oldest
        first), whose table records the caller deletes."""
        actor_id = bytes(record.actor_id)
        self.destroyed.pop(actor_id, None)
        self.destroyed[actor_id] = record.SerializeToString(deterministic=True)
        evicted: list[bytes] = []
        while len(self.destroyed) > self.max_destroyed:
            oldest, _ = self.destroyed.popitem(last=False)
            evicted.append(oldest)
        return evicted


def _add(index: NodeWorkerIndex, node_id: bytes, worker_id: bytes, actor_id: bytes) -> None:
    index.setdefault(bytes(node_id), {}).setdefault(bytes(worker_id), set()).add(actor_id)


def _discard(index: NodeWorkerIndex, node_id: bytes, worker_id: bytes, actor_id: bytes) -> None:
    workers = index.get(bytes(node_id))
    if workers is None:
        return
    actors = workers.get(bytes(worker_id))
    if actors is None:
        return
    actors.discard(actor_id)
    if not actors:
        del workers[bytes(worker_id)]
    if not workers:
        del index[bytes(node_id)]


def _members(index: NodeWorkerIndex, node_id: bytes, worker_id: bytes | None) -> list[bytes]:
    workers = index.get(bytes(node_id), {})
    if worker_id is not None:
        return sorted(workers.get(bytes(worker_id), ()))
    return sorted(actor for actors in workers.values() for actor in actors)
