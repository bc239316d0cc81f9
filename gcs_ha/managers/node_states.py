"""What the node manager infers about a node from what its raylet and the autoscaler say
(Ray's GcsNodeManager::UpdateAliveNode and InferDeathInfo): pure functions.

- `snapshot_after(view, previous)`: the node's `state_snapshot` after a resource view from
  its raylet: IDLE with the idle time when the view reports one, else ACTIVE with the
  activity it lists; DRAINING whenever the view says the node is draining.
- `inferred_death(drain, now_ms)`: why a node that stopped answering health checks died:
  AUTOSCALER_DRAIN_PREEMPTED with the drain's message when the autoscaler drained it for
  preemption and the drain's deadline has passed, else UNEXPECTED_TERMINATION.
"""

from __future__ import annotations

from gcs_ha.proto.ray.autoscaler_pb2 import DRAIN_NODE_REASON_PREEMPTION, DrainNodeRequest
from gcs_ha.proto.ray.common_pb2 import NodeDeathInfo
from gcs_ha.proto.ray.gcs_pb2 import NodeSnapshot
from gcs_ha.proto.ray.ray_syncer_pb2 import ResourceViewSyncMessage

HEALTH_DEATH_MESSAGE = "health check failed due to missing too many heartbeats"


def snapshot_after(view: ResourceViewSyncMessage, previous: NodeSnapshot) -> NodeSnapshot:
    """The node's snapshot once `view` arrived (`previous` is left as it is)."""
    snapshot = NodeSnapshot()
    snapshot.CopyFrom(previous)
    if view.idle_duration_ms > 0:
        snapshot.state = NodeSnapshot.IDLE
        snapshot.idle_duration_ms = view.idle_duration_ms
    else:
        snapshot.state = NodeSnapshot.ACTIVE
        del snapshot.node_activity[:]
        snapshot.node_activity.extend(view.node_activity)
    if view.is_draining:
        snapshot.state = NodeSnapshot.DRAINING
    return snapshot


def inferred_death(drain: DrainNodeRequest | None, now_ms: int) -> NodeDeathInfo:
    """The death info of a node that failed its health checks, given the drain the
    autoscaler asked of it in this term (None: not drained)."""
    preempted = (
        drain is not None
        and drain.deadline_timestamp_ms != 0
        and now_ms > drain.deadline_timestamp_ms
        and drain.reason == DRAIN_NODE_REASON_PREEMPTION
    )
    if preempted and drain is not None:
        return NodeDeathInfo(
            reason=NodeDeathInfo.AUTOSCALER_DRAIN_PREEMPTED, reason_message=drain.reason_message
        )
    return NodeDeathInfo(
        reason=NodeDeathInfo.UNEXPECTED_TERMINATION, reason_message=HEALTH_DEATH_MESSAGE
    )
