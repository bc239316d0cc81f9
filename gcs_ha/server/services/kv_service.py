"""Ray's InternalKVGcsService on gcs-ha: a thin servicer over the KvManager."""

from __future__ import annotations

from gcs_ha.managers.kv_manager import KvManager
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.server.ray_call import Context, ray_call


class InternalKvService(pb_grpc.InternalKVGcsServiceServicer):
    """InternalKVGet/MultiGet/Put/Del/Exists/Keys and GetInternalConfig."""

    def __init__(self, manager: KvManager) -> None:
        self._kv = manager

    async def InternalKVGet(
        self, request: pb.InternalKVGetRequest, context: Context
    ) -> pb.InternalKVGetReply:
        async def handle(reply: pb.InternalKVGetReply) -> None:
            reply.value = await self._kv.get(request.namespace, request.key)

        return await ray_call(context, pb.InternalKVGetReply(), handle)

    async def InternalKVMultiGet(
        self, request: pb.InternalKVMultiGetRequest, context: Context
    ) -> pb.InternalKVMultiGetReply:
        async def handle(reply: pb.InternalKVMultiGetReply) -> None:
            found = await self._kv.multi_get(request.namespace, list(request.keys))
            reply.results.extend(pb.MapFieldEntry(key=k, value=v) for k, v in found.items())

        return await ray_call(context, pb.InternalKVMultiGetReply(), handle)

    async def InternalKVPut(
        self, request: pb.InternalKVPutRequest, context: Context
    ) -> pb.InternalKVPutReply:
        async def handle(reply: pb.InternalKVPutReply) -> None:
            reply.added = await self._kv.put(
                request.namespace, request.key, request.value, request.overwrite
            )

        return await ray_call(context, pb.InternalKVPutReply(), handle)

    async def InternalKVDel(
        self, request: pb.InternalKVDelRequest, context: Context
    ) -> pb.InternalKVDelReply:
        async def handle(reply: pb.InternalKVDelReply) -> None:
            reply.deleted_num = await self._kv.delete(
                request.namespace, request.key, request.del_by_prefix
            )

        return await ray_call(context, pb.InternalKVDelReply(), handle)

    async def InternalKVExists(
        self, request: pb.InternalKVExistsRequest, context: Context
    ) -> pb.InternalKVExistsReply:
        async def handle(reply: pb.InternalKVExistsReply) -> None:
            reply.exists = await self._kv.exists(request.namespace, request.key)

        return await ray_call(context, pb.InternalKVExistsReply(), handle)

    async def InternalKVKeys(
        self, request: pb.InternalKVKeysRequest, context: Context
    ) -> pb.InternalKVKeysReply:
        async def handle(reply: pb.InternalKVKeysReply) -> None:
            reply.results.extend(await self._kv.keys(request.namespace, request.prefix))

        return await ray_call(context, pb.InternalKVKeysReply(), handle)

    async def GetInternalConfig(
        self, request: pb.GetInternalConfigRequest, context: Context
    ) -> pb.GetInternalConfigReply:
        async def handle(reply: pb.GetInternalConfigReply) -> None:
            reply.config = await self._kv.internal_config()

        return await ray_call(context, pb.GetInternalConfigReply(), handle)
