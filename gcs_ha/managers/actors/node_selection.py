"""Which raylet an actor's first lease request goes to (Ray's SelectForwardingNode).

Ray's GCS does not place actors itself (its own scheduling is off by default): it sends
the lease to one raylet, which grants it, spills it back to a better node or rejects it.
The forwarding node, in Ray's order:

  1. a node a hard label selector pins (`ray.io/node-id in (...)`), the first ALIVE one
     in id order;
  2. the node of a NodeAffinitySchedulingStrategy, if ALIVE;
  3. for an actor that needs resources, its owner's node if ALIVE;
  4. otherwise a random ALIVE node.

gcs-ha keeps Ray's rules 1-2 and uses the GCS's resource view (syncer-fed) to cut
spillbacks in 3-4: among ALIVE nodes whose view has the actor's placement demand
available, the owner's node when it is one of them (rule 3), else a random one; when no
view shows room (or the views are not in yet after a failover) it falls back to Ray's
plain rule. The raylet stays the judge: a stale view only costs a spillback.
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
