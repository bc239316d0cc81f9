"""Which raylet an actor's first lease request goes to (Ray's SelectForwardingNode): Ray's
rules, plus the GCS's syncer-fed resource view to cut spillbacks. The raylet stays the
judge: a stale view only costs a spillback. Rules: actors/DESIGN.md, "Module notes".
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from gcs_ha.managers.actors.gcs_actor import GcsActor, hard_node_ids
from gcs_ha.managers.resource_manager import NodeView
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo

EPSILON = 1e-9


def fits(demand: Mapping[str, float], view: NodeView | None) -> bool:
    """Whether `view` shows `demand` available (True for an empty demand)."""
    if not demand:
        return True
    if view is None:
        return False
    available = view.resources_available
    return all(available.get(name, 0.0) + EPSILON >= value for name, value in demand.items())


def select_forwarding_node(
    actor: GcsActor,
    alive: Mapping[bytes, GcsNodeInfo],
    views: Mapping[bytes, NodeView],
    rng: random.Random,
) -> bytes | None:
    """The id of the node to send the actor's lease to, or None when no node is ALIVE."""
    if not alive:
        return None
    for node_id in hard_node_ids(actor.spec.label_selector):
        if node_id in alive:
            return node_id
    strategy = actor.spec.scheduling_strategy
    if strategy.WhichOneof("scheduling_strategy") == "node_affinity_scheduling_strategy":
        wanted = bytes(strategy.node_affinity_scheduling_strategy.node_id)
        if wanted in alive:
            return wanted
    demand = actor.placement_demand()
    owner = actor.owner_node_id
    if demand:
        roomy = [node_id for node_id in alive if fits(demand, views.get(node_id))]
        if roomy:
            return owner if owner in roomy else _pick(roomy, rng)
    if actor.spec.required_resources and owner in alive:
        return owner
    return _pick(list(alive), rng)


def _pick(node_ids: Sequence[bytes], rng: random.Random) -> bytes:
    return node_ids[rng.randrange(len(node_ids))]
