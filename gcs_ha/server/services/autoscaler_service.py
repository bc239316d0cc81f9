"""Ray's `ray.rpc.autoscaler.AutoscalerStateService` on gcs-ha: a thin servicer over the
AutoscalerStateManager.

These replies have no `status` field, so a domain error ends the call with a gRPC status:
InvalidRequestError INVALID_ARGUMENT, NotFoundError NOT_FOUND, an unreachable raylet
(Resize) INTERNAL, our store's availability errors UNAVAILABLE (Ray's clients retry).
Why not Ray's UNKNOWN: DESIGN.md, "Ray's services (services/)".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import grpc.aio

from gcs_ha.errors import GcsHaError, InvalidRequestError, NotFoundError, UnavailableError
from gcs_ha.managers.autoscaler_state_manager import AutoscalerStateManager
from gcs_ha.proto.ray import autoscaler_pb2 as pb
from gcs_ha.proto.ray import autoscaler_pb2_grpc as pb_grpc
from gcs_ha.server.ray_call import Context
from gcs_ha.server.status import abort_ray_call

R = TypeVar("R")


async def autoscaler_call(context: Context, handler: Callable[[], Awaitable[R]]) -> R:
    """Run `handler`; a domain error ends the call with the status in the table above."""
    try:
        return await handler()
    except InvalidRequestError as error:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
    except NotFoundError as error:
        await context.abort(grpc.StatusCode.NOT_FOUND, str(error))
    except GcsHaError as error:
        await abort_ray_call(context, error)
    raise AssertionError("context.abort returned")  # pragma: no cover


class AutoscalerStateService(pb_grpc.AutoscalerStateServiceServicer):
    """The seven AutoscalerStateService calls."""

    def __init__(self, manager: AutoscalerStateManager) -> None:
        self._state = manager

    async def GetClusterResourceState(
        self, request: pb.GetClusterResourceStateRequest, context: Context
    ) -> pb.GetClusterResourceStateReply:
        async def handle() -> pb.GetClusterResourceStateReply:
            state = await self._state.cluster_resource_state()
            return pb.GetClusterResourceStateReply(cluster_resource_state=state)

        return await autoscaler_call(context, handle)

    async def GetClusterStatus(
        self, request: pb.GetClusterStatusRequest, context: Context
    ) -> pb.GetClusterStatusReply:
        return await autoscaler_call(context, self._state.cluster_status)

    async def ReportAutoscalingState(
        self, request: pb.ReportAutoscalingStateRequest, context: Context
    ) -> pb.ReportAutoscalingStateReply:
        self._state.report_autoscaling_state(request.autoscaling_state)
        return pb.ReportAutoscalingStateReply()

    async def RequestClusterResourceConstraint(
        self, request: pb.RequestClusterResourceConstraintRequest, context: Context
    ) -> pb.RequestClusterResourceConstraintReply:
        self._state.request_cluster_resource_constraint(request.cluster_resource_constraint)
        return pb.RequestClusterResourceConstraintReply()

    async def ReportClusterConfig(
        self, request: pb.ReportClusterConfigRequest, context: Context
    ) -> pb.ReportClusterConfigReply:
        async def handle() -> pb.ReportClusterConfigReply:
            await self._state.report_cluster_config(request.cluster_config)
            return pb.ReportClusterConfigReply()

        return await autoscaler_call(context, handle)

    async def DrainNode(self, request: pb.DrainNodeRequest, context: Context) -> pb.DrainNodeReply:
        return await autoscaler_call(context, lambda: self._state.drain_node(request))

    async def ResizeRayletResourceInstances(
        self, request: pb.ResizeRayletResourceInstancesRequest, context: Context
    ) -> pb.ResizeRayletResourceInstancesReply:
        async def handle() -> pb.ResizeRayletResourceInstancesReply:
            try:
                totals = await self._state.resize_raylet_resource_instances(
                    request.node_id, request.resources
                )
            except UnavailableError as error:  # the raylet: resize touches no store
                await context.abort(grpc.StatusCode.INTERNAL, str(error))
            return pb.ResizeRayletResourceInstancesReply(total_resources=totals)

        return await autoscaler_call(context, handle)


def mount(server: grpc.aio.Server, manager: AutoscalerStateManager) -> None:
    """Serve ray.rpc.autoscaler.AutoscalerStateService on `server` through `manager`."""
    servicer = AutoscalerStateService(manager)
    pb_grpc.add_AutoscalerStateServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
