"""Why an actor died: the ActorDeathCause records the GCS stores and publishes.

Each builder makes the death cause Ray's GCS makes for one situation (its worker died,
its owner died, its node died, `ray.kill`, out of scope, references deleted, it could
not be scheduled), with the actor's context filled as Ray fills it (owner, node address,
pid, name, namespace, class, never_started) and Ray's user-facing messages, which the
driver shows in RayActorError. Pure functions of their arguments.
"""

from __future__ import annotations

from gcs_ha.managers.actors.gcs_actor import DEPENDENCIES_UNREADY, PENDING_CREATION, GcsActor
from gcs_ha.proto.ray.common_pb2 import (
    NODE_OUT_OF_MEMORY,
    ActorDeathCause,
    ActorDiedErrorContext,
    NodeDeathInfo,
    RayException,
    WorkerExitType,
)
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo
from gcs_ha.proto.ray.node_manager_pb2 import RequestWorkerLeaseReply

Reason = ActorDiedErrorContext.Reason
FailureType = RequestWorkerLeaseReply.SchedulingFailureType

_NODE_DEATH_WORDS = {
    NodeDeathInfo.EXPECTED_TERMINATION: "terminated expectedly",
    NodeDeathInfo.UNEXPECTED_TERMINATION: "terminated unexpectedly",
    NodeDeathInfo.AUTOSCALER_DRAIN_PREEMPTED: "preempted",
}


def _died(actor: GcsActor | None, reason: int, message: str) -> ActorDeathCause:
    cause = ActorDeathCause()
    context = cause.actor_died_error_context
    context.reason = reason  # type: ignore[assignment]
    context.error_message = message
    if actor is not None:
        data = actor.data
        context.owner_id = data.owner_address.worker_id
        context.owner_ip_address = data.owner_address.ip_address
        context.node_ip_address = data.address.ip_address
        context.pid = data.pid
        context.name = data.name
        context.ray_namespace = data.ray_namespace
        context.class_name = data.class_name
        context.actor_id = data.actor_id
        context.never_started = actor.state in (DEPENDENCIES_UNREADY, PENDING_CREATION)
    return cause


def exit_type_name(exit_type: int) -> str:
    return WorkerExitType.Name(exit_type)


def worker_died(actor: GcsActor | None, exit_type: int, detail: str) -> ActorDeathCause:
    """The actor's worker process exited (an OOM kill has its own context)."""
    if exit_type == NODE_OUT_OF_MEMORY:
        cause = ActorDeathCause()
        cause.oom_context.fail_immediately = False
        cause.oom_context.error_message = detail
        return cause
    return _died(
        actor,
        Reason.WORKER_DIED,
        "The actor is dead because its worker process has died. Worker exit type: "
        f"{exit_type_name(exit_type)} Worker exit detail: {detail}",
    )


def creation_task_failed(exception: RayException) -> ActorDeathCause:
    """The actor's constructor raised (the worker reported the exception)."""
    cause = ActorDeathCause()
    cause.creation_task_failure_context.CopyFrom(exception)
    return cause


def owner_died(
    actor: GcsActor | None, owner_id: bytes, exit_type: int, detail: str, owner_ip: str
) -> ActorDeathCause:
    """The worker or driver that owns the actor died (or its node did)."""
    return _died(
        actor,
        Reason.OWNER_DIED,
        f"The actor is dead because its owner has died. Owner Id: {owner_id.hex()} "
        f"Owner Ip address: {owner_ip} Owner worker exit type: {exit_type_name(exit_type)} "
        f"Worker exit detail: {detail}",
    )


def killed_by_application(actor: GcsActor | None) -> ActorDeathCause:
    """`ray.kill`."""
    return _died(actor, Reason.RAY_KILL, "The actor is dead because it was killed by `ray.kill`.")


def out_of_scope(actor: GcsActor | None) -> ActorDeathCause:
    """Every handle to the actor went away (restartable for lineage reconstruction)."""
    return _died(
        actor,
        Reason.OUT_OF_SCOPE,
        "The actor is dead because all references to the actor were removed.",
    )


def ref_deleted(actor: GcsActor | None) -> ActorDeathCause:
    """Every reference, lineage included, went away (never restartable)."""
    return _died(
        actor,
        Reason.REF_DELETED,
        "The actor is dead because all references to the actor were removed including "
        "lineage ref count.",
    )


def node_died(actor: GcsActor | None, node: GcsNodeInfo) -> ActorDeathCause:
    """The node the actor ran on (or was being placed on) died."""
    info = node.death_info
    words = _NODE_DEATH_WORDS.get(info.reason, "terminated")
    cause = _died(
        actor,
        Reason.NODE_DIED,
        f"The actor died because its node has died. Node Id: {node.node_id.hex()}\n"
        f"\tthe actor's node was {words}: {info.reason_message}",
    )
    cause.actor_died_error_context.node_death_info.CopyFrom(info)
    return cause


def scheduling_failed(failure_type: int, message: str) -> ActorDeathCause:
    """A raylet cancelled the actor's lease for good (Ray's OnActorSchedulingFailed)."""
    cause = ActorDeathCause()
    if failure_type == FailureType.SCHEDULING_CANCELLED_PLACEMENT_GROUP_REMOVED:
        cause.actor_unschedulable_context.error_message = (
            "Could not create the actor because its associated placement group was "
            f"removed.\n{message}"
        )
    elif failure_type == FailureType.SCHEDULING_CANCELLED_RUNTIME_ENV_SETUP_FAILED:
        cause.runtime_env_failed_context.error_message = (
            "Could not create the actor because its associated runtime env failed to be "
            f"created.\n{message}"
        )
    elif failure_type == FailureType.SCHEDULING_CANCELLED_WORKER_STARTUP_FAILED:
        cause.actor_unschedulable_context.error_message = (
            f"Could not create the actor because worker startup repeatedly failed.\n{message}"
        )
    else:
        cause.actor_unschedulable_context.error_message = message
    return cause


def reason_of(cause: ActorDeathCause) -> int | None:
    """The ActorDiedErrorContext reason of a death cause, or None for other kinds."""
    if cause.WhichOneof("context") != "actor_died_error_context":
        return None
    return int(cause.actor_died_error_context.reason)
