"""Ray's WorkerInfoGcsService on gcs-ha: a thin servicer over the WorkerManager.

Errors travel as in every Ray service here (gcs_ha.server.ray_call): InvalidRequestError
(no worker id) as InvalidArgument and NotFoundError (updating an unknown worker) as
NotFound in the reply's status; store errors abort with UNAVAILABLE and Ray's clients
replay the call. GetWorkerInfo of an unknown worker answers OK without data, as Ray does.
"""

from __future__ import annotations

import grpc.aio

from gcs_ha.managers.worker_manager import WorkerManager
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.server.ray_call import Context, ray_call


class WorkerInfoService(pb_grpc.WorkerInfoGcsServiceServicer):
    """The six WorkerInfoGcsService methods."""

    def __init__(self, manager: WorkerManager) -> None:
        self._workers = manager

    async def AddWorkerInfo(
        self, request: pb.AddWorkerInfoRequest, context: Context
    ) -> pb.AddWorkerInfoReply:
        async def handle(reply: pb.AddWorkerInfoReply) -> None:
            await self._workers.add_worker_info(request.worker_data)

        return await ray_call(context, pb.AddWorkerInfoReply(), handle)

    async def ReportWorkerFailure(
        self, request: pb.ReportWorkerFailureRequest, context: Context
    ) -> pb.ReportWorkerFailureReply:
        async def handle(reply: pb.ReportWorkerFailureReply) -> None:
            await self._workers.report_worker_failure(request.worker_failure)

        return await ray_call(context, pb.ReportWorkerFailureReply(), handle)

    async def GetWorkerInfo(
        self, request: pb.GetWorkerInfoRequest, context: Context
    ) -> pb.GetWorkerInfoReply:
        async def handle(reply: pb.GetWorkerInfoReply) -> None:
            worker = await self._workers.get_worker_info(request.worker_id)
            if worker is not None:
                reply.worker_table_data.CopyFrom(worker)

        return await ray_call(context, pb.GetWorkerInfoReply(), handle)

    async def GetAllWorkerInfo(
        self, request: pb.GetAllWorkerInfoRequest, context: Context
    ) -> pb.GetAllWorkerInfoReply:
        async def handle(reply: pb.GetAllWorkerInfoReply) -> None:
            page = await self._workers.get_all_worker_info(
                limit=request.limit if request.HasField("limit") else None,
                exist_paused_threads=request.filters.exist_paused_threads,
                is_alive=request.filters.is_alive,
            )
            reply.worker_table_data.extend(page.workers)
            reply.total, reply.num_filtered = page.total, page.num_filtered

        return await ray_call(context, pb.GetAllWorkerInfoReply(), handle)

    async def UpdateWorkerDebuggerPort(
        self, request: pb.UpdateWorkerDebuggerPortRequest, context: Context
    ) -> pb.UpdateWorkerDebuggerPortReply:
        async def handle(reply: pb.UpdateWorkerDebuggerPortReply) -> None:
            await self._workers.update_debugger_port(request.worker_id, request.debugger_port)

        return await ray_call(context, pb.UpdateWorkerDebuggerPortReply(), handle)

    async def UpdateWorkerNumPausedThreads(
        self, request: pb.UpdateWorkerNumPausedThreadsRequest, context: Context
    ) -> pb.UpdateWorkerNumPausedThreadsReply:
        async def handle(reply: pb.UpdateWorkerNumPausedThreadsReply) -> None:
            await self._workers.update_num_paused_threads(
                request.worker_id, request.num_paused_threads_delta
            )

        return await ray_call(context, pb.UpdateWorkerNumPausedThreadsReply(), handle)


def mount(server: grpc.aio.Server, manager: WorkerManager) -> WorkerInfoService:
    """Serve WorkerInfoGcsService of `manager` on `server`."""
    servicer = WorkerInfoService(manager)
    pb_grpc.add_WorkerInfoGcsServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    return servicer
