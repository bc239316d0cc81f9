"""Which of Ray's unary GCS calls a follower may send again, once, when it forwarded one
to a leader that was lost with the call in flight (server/forwarding.py).

Every unary method is in exactly one table (a unit test checks it): `READ_ONLY_METHODS`,
`KEYED_IDEMPOTENT_METHODS` (writes keyed by an id only their caller uses),
`DUPLICATE_TOLERANT_METHODS` (task events, a spent job number) and `NOT_REPLAYED` (a
second run could change what others see; the reason is given). Why replay at all:
DESIGN.md, "Hold, replay once, then UNAVAILABLE".
"""

from __future__ import annotations


def _methods(service: str, *names: str) -> frozenset[str]:
    return frozenset(f"/ray.rpc.{service}/{name}" for name in names)


READ_ONLY_METHODS: frozenset[str] = (
    _methods(
        "InternalKVGcsService",
        "InternalKVGet",
        "InternalKVMultiGet",
        "InternalKVExists",
        "InternalKVKeys",
        "GetInternalConfig",
    )
    | _methods(
        "NodeInfoGcsService",
        "GetClusterId",
        "GetAllNodeInfo",
        "GetAllNodeAddressAndLiveness",
        "CheckAlive",
    )
    | _methods(
        "NodeResourceInfoGcsService",
        "GetAllAvailableResources",
        "GetAllTotalResources",
        "GetAllResourceUsage",
        "GetDrainingNodes",
    )
    | _methods("JobInfoGcsService", "GetAllJobInfo")
    | _methods(
        "ActorInfoGcsService",
        "GetActorInfo",
        "GetNamedActorInfo",
        "ListNamedActors",
        "GetAllActorInfo",
    )
    | _methods(
        "PlacementGroupInfoGcsService",
        "GetPlacementGroup",
        "GetNamedPlacementGroup",
        "GetAllPlacementGroup",
    )
    | _methods("WorkerInfoGcsService", "GetWorkerInfo", "GetAllWorkerInfo")
    | _methods("TaskInfoGcsService", "GetTaskEvents")
    | _methods("autoscaler.AutoscalerStateService", "GetClusterResourceState", "GetClusterStatus")
)

# A subscriber sends its next command batch or poll only after the answer to this one, so
# a replay cannot overtake a later command of the same subscriber.
_PUBSUB = ("GcsSubscriberPoll", "GcsSubscriberCommandBatch")

KEYED_IDEMPOTENT_METHODS: frozenset[str] = (
    _methods(
        "ActorInfoGcsService",
        "RegisterActor",
        "CreateActor",
        "KillActorViaGcs",
        "ReportActorOutOfScope",
    )
    | _methods(
        "PlacementGroupInfoGcsService",
        "CreatePlacementGroup",
        "RemovePlacementGroup",
        "WaitPlacementGroupUntilReady",
    )
    | _methods("ControlPlanePubSubGcsService", *_PUBSUB)
    | _methods("ObservabilityPubSubService", *_PUBSUB)
    | _methods("NodeInfoGcsService", "RegisterNode", "UnregisterNode")
    | _methods("JobInfoGcsService", "AddJob", "MarkJobFinished")
    | _methods(
        "WorkerInfoGcsService", "ReportWorkerFailure", "AddWorkerInfo", "UpdateWorkerDebuggerPort"
    )
    # versioned: an older state than the one kept is ignored
    | _methods("autoscaler.AutoscalerStateService", "ReportAutoscalingState")
)

DUPLICATE_TOLERANT_METHODS: frozenset[str] = (
    # the same state transitions again; a batch's profile events recorded twice
    _methods("TaskInfoGcsService", "AddTaskEventData")
    | _methods("RayEventExportGcsService", "AddEvents")
    # a job number nobody saw is skipped
    | _methods("JobInfoGcsService", "GetNextJobID")
    # a second pin of the same URI, expiring with the first
    | _methods("RuntimeEnvGcsService", "PinRuntimeEnvURI")
)

NOT_REPLAYED: dict[str, str] = {
    "/ray.rpc.InternalKVGcsService/InternalKVPut": "may overwrite another client's later put",
    "/ray.rpc.InternalKVGcsService/InternalKVDel": "may delete another client's later put",
    "/ray.rpc.ControlPlanePubSubGcsService/GcsPublish": "subscribers would get it twice",
    "/ray.rpc.ObservabilityPubSubService/GcsPublish": "subscribers would get it twice",
    "/ray.rpc.ObservabilityPubSubService/ReportJobError": "the driver would print it twice",
    "/ray.rpc.NodeInfoGcsService/DrainNode": "may undo a later drain decision",
    "/ray.rpc.autoscaler.AutoscalerStateService/DrainNode": "may undo a later drain decision",
    "/ray.rpc.autoscaler.AutoscalerStateService/ReportClusterConfig": (
        "may overwrite a later config"
    ),
    "/ray.rpc.autoscaler.AutoscalerStateService/RequestClusterResourceConstraint": (
        "may overwrite a later constraint"
    ),
    "/ray.rpc.autoscaler.AutoscalerStateService/ResizeRayletResourceInstances": (
        "may undo a later resize"
    ),
    "/ray.rpc.ActorInfoGcsService/RestartActorForLineageReconstruction": (
        "may restart an actor that was restarted and went out of scope since"
    ),
    "/ray.rpc.WorkerInfoGcsService/UpdateWorkerNumPausedThreads": "adds a delta twice",
}

# What a follower sends again, once, when the leader may have run it and was lost.
REPLAYABLE_METHODS: frozenset[str] = (
    READ_ONLY_METHODS | KEYED_IDEMPOTENT_METHODS | DUPLICATE_TOLERANT_METHODS
)
