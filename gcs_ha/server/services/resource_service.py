"""Ray's NodeResourceInfoGcsService on gcs-ha: a thin servicer over the ResourceManager.

GetAllAvailableResources / GetAllTotalResources (`ray.available_resources()`,
`ray.cluster_resources()`), GetAllResourceUsage (the autoscaler monitor, every 5 s) and
GetDrainingNodes. All four read the manager's in-memory view; none can fail once the
manager serves.
"""

from __future__ import annotations

import grpc.aio

from gcs_ha.managers.resource_manager import ResourceManager
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.server.ray_call import Context, ray_call


class NodeResourceInfoService(pb_grpc.NodeResourceInfoGcsServiceServicer):
    """The four NodeResourceInfoGcsService calls."""

    def __init__(self, manager: ResourceManager) -> None:
        self._resources = manager

    async def GetAllAvailableResources(
        self, request: pb.GetAllAvailableResourcesRequest, context: Context
    ) -> pb.GetAllAvailableResourcesReply:
        async def handle(reply: pb.GetAllAvailableResourcesReply) -> None:
            reply.resources_list.extend(self._resources.available_resources())

        return await ray_call(context, pb.GetAllAvailableResourcesReply(), handle)

    async def GetAllTotalResources(
        self, request: pb.GetAllTotalResourcesRequest, context: Context
    ) -> pb.GetAllTotalResourcesReply:
        async def handle(reply: pb.GetAllTotalResourcesReply) -> None:
            reply.resources_list.extend(self._resources.total_resources())

        return await ray_call(context, pb.GetAllTotalResourcesReply(), handle)

    async def GetAllResourceUsage(
        self, request: pb.GetAllResourceUsageRequest, context: Context
    ) -> pb.GetAllResourceUsageReply:
        async def handle(reply: pb.GetAllResourceUsageReply) -> None:
            usage = self._resources.resource_usage()
            if usage.batch:  # Ray leaves the field unset when no node reported
                reply.resource_usage_data.CopyFrom(usage)

        return await ray_call(context, pb.GetAllResourceUsageReply(), handle)

    async def GetDrainingNodes(
        self, request: pb.GetDrainingNodesRequest, context: Context
    ) -> pb.GetDrainingNodesReply:
        async def handle(reply: pb.GetDrainingNodesReply) -> None:
            reply.draining_nodes.extend(self._resources.draining_nodes())

        return await ray_call(context, pb.GetDrainingNodesReply(), handle)


def mount(server: grpc.aio.Server, manager: ResourceManager) -> None:
    """Serve ray.rpc.NodeResourceInfoGcsService on `server` through `manager`."""
    servicer = NodeResourceInfoService(manager)
    pb_grpc.add_NodeResourceInfoGcsServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
