"""The actor manager's reads: GetAllActorInfo (filters, limit, dead jobs) and
ListNamedActors, over the registry (and the actor table for dead jobs), as Ray answers
them. Pure functions of their inputs apart from the one table read."""

from __future__ import annotations

from dataclasses import dataclass

from gcs_ha.managers.actors.gcs_actor import DEAD
from gcs_ha.managers.actors.registry import ActorRegistry
from gcs_ha.proto.ray.gcs_pb2 import ActorTableData
from gcs_ha.storage.tables import GcsTableStorage


@dataclass(frozen=True)
class ActorPage:
    """GetAllActorInfo's answer: the records, how many there are, how many were
    filtered out before the limit was reached."""

    actors: list[ActorTableData]
    total: int
    num_filtered: int


@dataclass(frozen=True)
class ActorFilters:
    """GetAllActorInfo's filters (None: not filtered on)."""

    actor_id: bytes | None = None
    job_id: bytes | None = None
    state: int | None = None

    def match(self, data: ActorTableData) -> bool:
        return (
            (self.actor_id is None or data.actor_id == self.actor_id)
            and (self.job_id is None or data.job_id == self.job_id)
            and (self.state is None or data.state == self.state)
        )


async def get_all_actor_info(
    registry: ActorRegistry,
    tables: GcsTableStorage,
    *,
    show_dead_jobs: bool,
    limit: int | None,
    filters: ActorFilters | None,
) -> ActorPage:
    """Registered then destroyed actors (with `show_dead_jobs`, every record of the
    actor table), those matching `filters`, at most `limit` (None or <= 0: all).
    `total` counts every record considered, `num_filtered` those skipped by the filters
    before the limit was reached (Ray's counting)."""
    if show_dead_jobs:
        records = list((await tables.actor_table.get_all()).values())
    else:
        records = list(registry.all_records())
    cap = limit if limit is not None and limit > 0 else len(records)
    picked: list[ActorTableData] = []
    filtered = 0
    for record in records:
        if len(picked) >= cap:
            break
        if filters is not None and not filters.match(record):
            filtered += 1
            continue
        copy = ActorTableData()
        copy.CopyFrom(record)
        picked.append(copy)
    return ActorPage(picked, len(records), filtered)


def list_named_actors(
    registry: ActorRegistry, all_namespaces: bool, namespace: str
) -> list[tuple[str, str]]:
    """(namespace, name) of the named actors that are not DEAD, in one namespace or all."""
    spaces = registry.named if all_namespaces else {namespace: registry.named.get(namespace, {})}
    found: list[tuple[str, str]] = []
    for space, names in spaces.items():
        for name, actor_id in names.items():
            actor = registry.get(actor_id)
            if actor is not None and actor.state != DEAD:
                found.append((space, name))
    return found
