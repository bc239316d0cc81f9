"""Ray's NodeInfoGcsService on gcs-ha: a thin servicer over the NodeManager.

GetClusterId comes from `ClusterIdServicer` (gcs_ha.server.cluster_id), which any
replica answers once it knows the id; every other method runs on the serving leader
only (the forwarding layer routes calls there) and so CheckAlive says is_leader=true.

Errors travel as in every Ray service here (gcs_ha.server.ray_call): InvalidRequestError
(a malformed node id) in the reply's status as InvalidArgument; store errors
(NotLeaderError, UnknownOutcomeError, UnavailableError) abort with UNAVAILABLE, and Ray's
clients replay the call, which the manager makes harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import grpc.aio

from gcs_ha.managers.node_manager import NodeManager
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.server.cluster_id import ClusterId, ClusterIdServicer
from gcs_ha.server.ray_call import Context, ray_call

RAY_VERSION = "2.60.0"


class NodeInfoService(ClusterIdServicer):
    """NodeInfoGcsService: GetClusterId (inherited) and the node calls."""

    def __init__(self, manager: NodeManager, cluster_id: ClusterId) -> None:
        super().__init__(cluster_id)
        self._nodes = manager

    async def RegisterNode(
        self, request: pb.RegisterNodeRequest, context: Context
    ) -> pb.RegisterNodeReply:
        async def handle(reply: pb.RegisterNodeReply) -> None:
            await self._nodes.register_node(request.node_info)

        return await ray_call(context, pb.RegisterNodeReply(), handle)

    async def UnregisterNode(
        self, request: pb.UnregisterNodeRequest, context: Context
    ) -> pb.UnregisterNodeReply:
        async def handle(reply: pb.UnregisterNodeReply) -> None:
            await self._nodes.unregister_node(request.node_id, request.node_death_info)

        return await ray_call(context, pb.UnregisterNodeReply(), handle)

    async def DrainNode(self, request: pb.DrainNodeRequest, context: Context) -> pb.DrainNodeReply:
        async def handle(reply: pb.DrainNodeReply) -> None:
            asked = self._nodes.drain_nodes(d.node_id for d in request.drain_node_data)
            reply.drain_node_status.extend(pb.DrainNodeStatus(node_id=i) for i in asked)

        return await ray_call(context, pb.DrainNodeReply(), handle)

    async def GetAllNodeInfo(
        self, request: pb.GetAllNodeInfoRequest, context: Context
    ) -> pb.GetAllNodeInfoReply:
        async def handle(reply: pb.GetAllNodeInfoReply) -> None:
            found = self._nodes.get_all_node_info(
                request.limit if request.HasField("limit") else None,
                request.node_selectors,
                request.state_filter if request.HasField("state_filter") else None,
            )
            reply.node_info_list.extend(found.nodes)
            reply.total = found.total
            reply.num_filtered = found.total - len(found.nodes)

        return await ray_call(context, pb.GetAllNodeInfoReply(), handle)

    async def GetAllNodeAddressAndLiveness(
        self, request: pb.GetAllNodeAddressAndLivenessRequest, context: Context
    ) -> pb.GetAllNodeAddressAndLivenessReply:
        async def handle(reply: pb.GetAllNodeAddressAndLivenessReply) -> None:
            reply.node_info_list.extend(
                self._nodes.get_all_node_address_and_liveness(
                    request.node_ids,
                    request.limit if request.HasField("limit") else None,
                    request.state_filter if request.HasField("state_filter") else None,
                )
            )

        return await ray_call(context, pb.GetAllNodeAddressAndLivenessReply(), handle)

    async def CheckAlive(
        self, request: pb.CheckAliveRequest, context: Context
    ) -> pb.CheckAliveReply:
        async def handle(reply: pb.CheckAliveReply) -> None:
            reply.ray_version = RAY_VERSION
            reply.raylet_alive.extend(self._nodes.check_alive(request.node_ids))
            reply.is_leader = True

        return await ray_call(context, pb.CheckAliveReply(), handle)


class NodeInfoManagers(Protocol):
    """What `mount` needs: the node manager and this replica's cluster id."""

    @property
    def node_manager(self) -> NodeManager: ...

    @property
    def cluster_id(self) -> ClusterId: ...


@dataclass(frozen=True)
class NodeInfoDeps:
    """A plain NodeInfoManagers."""

    node_manager: NodeManager
    cluster_id: ClusterId


def mount(server: grpc.aio.Server, managers: NodeInfoManagers) -> NodeInfoService:
    """Serve NodeInfoGcsService (all of it, GetClusterId included) on `server`."""
    servicer = NodeInfoService(managers.node_manager, managers.cluster_id)
    pb_grpc.add_NodeInfoGcsServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    return servicer
