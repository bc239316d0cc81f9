"""Ray's PlacementGroupInfoGcsService on gcs-ha: a thin servicer over the
PlacementGroupManager.

Domain errors travel in the reply's status (gcs_ha.server.ray_call): InvalidRequestError
(a malformed id) as InvalidArgument, NotFoundError as NotFound, a name already taken
(NameTakenError) as Invalid, as Ray's GCS does. Store errors abort with UNAVAILABLE and
Ray's clients replay the call, which the manager makes harmless. Behaviour Ray relies on:
DESIGN.md, "Ray's services (services/)".
"""

from __future__ import annotations

import grpc.aio

from gcs_ha.managers.placement_groups.manager import PlacementGroupManager
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.server.ray_call import Context, ray_call


class PlacementGroupInfoService(pb_grpc.PlacementGroupInfoGcsServiceServicer):
    """The six PlacementGroupInfoGcsService methods."""

    def __init__(self, manager: PlacementGroupManager) -> None:
        self._groups = manager

    async def CreatePlacementGroup(
        self, request: pb.CreatePlacementGroupRequest, context: Context
    ) -> pb.CreatePlacementGroupReply:
        async def handle(reply: pb.CreatePlacementGroupReply) -> None:
            await self._groups.create_placement_group(request.placement_group_spec)

        return await ray_call(context, pb.CreatePlacementGroupReply(), handle)

    async def RemovePlacementGroup(
        self, request: pb.RemovePlacementGroupRequest, context: Context
    ) -> pb.RemovePlacementGroupReply:
        async def handle(reply: pb.RemovePlacementGroupReply) -> None:
            await self._groups.remove_placement_group(request.placement_group_id)

        return await ray_call(context, pb.RemovePlacementGroupReply(), handle)

    async def GetPlacementGroup(
        self, request: pb.GetPlacementGroupRequest, context: Context
    ) -> pb.GetPlacementGroupReply:
        async def handle(reply: pb.GetPlacementGroupReply) -> None:
            record = self._groups.get_placement_group(request.placement_group_id)
            if record is not None:
                reply.placement_group_table_data.CopyFrom(record)

        return await ray_call(context, pb.GetPlacementGroupReply(), handle)

    async def GetNamedPlacementGroup(
        self, request: pb.GetNamedPlacementGroupRequest, context: Context
    ) -> pb.GetNamedPlacementGroupReply:
        async def handle(reply: pb.GetNamedPlacementGroupReply) -> None:
            record = self._groups.get_named_placement_group(request.name, request.ray_namespace)
            if record is not None:
                reply.placement_group_table_data.CopyFrom(record)

        return await ray_call(context, pb.GetNamedPlacementGroupReply(), handle)

    async def GetAllPlacementGroup(
        self, request: pb.GetAllPlacementGroupRequest, context: Context
    ) -> pb.GetAllPlacementGroupReply:
        async def handle(reply: pb.GetAllPlacementGroupReply) -> None:
            limit = request.limit if request.HasField("limit") else None
            records, total = self._groups.get_all_placement_groups(limit)
            reply.placement_group_table_data.extend(records)
            reply.total = total

        return await ray_call(context, pb.GetAllPlacementGroupReply(), handle)

    async def WaitPlacementGroupUntilReady(
        self, request: pb.WaitPlacementGroupUntilReadyRequest, context: Context
    ) -> pb.WaitPlacementGroupUntilReadyReply:
        async def handle(reply: pb.WaitPlacementGroupUntilReadyReply) -> None:
            await self._groups.wait_until_ready(request.placement_group_id)

        return await ray_call(context, pb.WaitPlacementGroupUntilReadyReply(), handle)


def mount(server: grpc.aio.Server, manager: PlacementGroupManager) -> PlacementGroupInfoService:
    """Serve PlacementGroupInfoGcsService of `manager` on `server`."""
    servicer = PlacementGroupInfoService(manager)
    pb_grpc.add_PlacementGroupInfoGcsServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    return servicer
