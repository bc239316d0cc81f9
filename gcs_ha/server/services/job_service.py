"""Ray's JobInfoGcsService on gcs-ha: a thin servicer over the JobManager.

Errors travel as in every Ray service here (gcs_ha.server.ray_call): InvalidRequestError
(a malformed job id, a negative limit) in the reply's status as InvalidArgument; store
errors abort with UNAVAILABLE and Ray's clients replay the call, which the manager makes
harmless. ReportJobError is Ray's ObservabilityPubSubService method (pubsub_service).
"""

from __future__ import annotations

import grpc
import grpc.aio

from gcs_ha.managers.job_manager import JobManager
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.server.ray_call import Context, ray_call


class JobInfoService(pb_grpc.JobInfoGcsServiceServicer):
    """GetNextJobID, AddJob, MarkJobFinished, GetAllJobInfo."""

    def __init__(self, manager: JobManager) -> None:
        self._jobs = manager

    async def GetNextJobID(
        self, request: pb.GetNextJobIDRequest, context: Context
    ) -> pb.GetNextJobIDReply:
        async def handle(reply: pb.GetNextJobIDReply) -> None:
            reply.job_id = await self._jobs.next_job_id()

        return await ray_call(context, pb.GetNextJobIDReply(), handle)

    async def AddJob(self, request: pb.AddJobRequest, context: Context) -> pb.AddJobReply:
        async def handle(reply: pb.AddJobReply) -> None:
            await self._jobs.add_job(request.data)

        return await ray_call(context, pb.AddJobReply(), handle)

    async def MarkJobFinished(
        self, request: pb.MarkJobFinishedRequest, context: Context
    ) -> pb.MarkJobFinishedReply:
        async def handle(reply: pb.MarkJobFinishedReply) -> None:
            await self._jobs.mark_job_finished(request.job_id)

        return await ray_call(context, pb.MarkJobFinishedReply(), handle)

    async def GetAllJobInfo(
        self, request: pb.GetAllJobInfoRequest, context: Context
    ) -> pb.GetAllJobInfoReply:
        async def handle(reply: pb.GetAllJobInfoReply) -> None:
            jobs = await self._jobs.get_all_job_info(
                limit=request.limit if request.HasField("limit") else None,
                job_or_submission_id=(
                    request.job_or_submission_id
                    if request.HasField("job_or_submission_id")
                    else None
                ),
                skip_submission_job_info=request.skip_submission_job_info_field,
                skip_is_running_tasks=request.skip_is_running_tasks_field,
            )
            reply.job_info_list.extend(jobs)

        return await ray_call(context, pb.GetAllJobInfoReply(), handle)


def mount(server: grpc.aio.Server, manager: JobManager) -> JobInfoService:
    """Serve JobInfoGcsService of `manager` on `server`."""
    servicer = JobInfoService(manager)
    pb_grpc.add_JobInfoGcsServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    return servicer
