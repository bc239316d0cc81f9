"""Ray's TaskInfoGcsService on gcs-ha: a thin servicer over the TaskManager.

Task events live in the leader's memory only (gcs_ha.managers.task_manager says why).
Errors: a filter with an unknown predicate answers InvalidArgument in the reply's status
(InvalidRequestError), as Ray does; nothing here touches the store.
"""

from __future__ import annotations

import grpc.aio

from gcs_ha.managers.task_manager import TaskManager
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.server.ray_call import Context, ray_call


class TaskInfoService(pb_grpc.TaskInfoGcsServiceServicer):
    """AddTaskEventData and GetTaskEvents."""

    def __init__(self, manager: TaskManager) -> None:
        self._tasks = manager

    async def AddTaskEventData(
        self, request: pb.AddTaskEventDataRequest, context: Context
    ) -> pb.AddTaskEventDataReply:
        async def handle(reply: pb.AddTaskEventDataReply) -> None:
            self._tasks.add_task_event_data(request.data)

        return await ray_call(context, pb.AddTaskEventDataReply(), handle)

    async def GetTaskEvents(
        self, request: pb.GetTaskEventsRequest, context: Context
    ) -> pb.GetTaskEventsReply:
        async def handle(reply: pb.GetTaskEventsReply) -> None:
            limit = request.limit if request.HasField("limit") else None
            page = self._tasks.get_task_events(limit, request.filters)
            reply.events_by_task.extend(page.events)
            reply.num_profile_task_events_dropped = page.num_profile_events_dropped
            reply.num_status_task_events_dropped = page.num_status_events_dropped
            reply.num_total_stored = page.num_total_stored
            reply.num_filtered_on_gcs = page.num_filtered
            reply.num_truncated = page.num_truncated

        return await ray_call(context, pb.GetTaskEventsReply(), handle)


def mount(server: grpc.aio.Server, manager: TaskManager) -> TaskInfoService:
    """Serve TaskInfoGcsService of `manager` on `server`."""
    servicer = TaskInfoService(manager)
    pb_grpc.add_TaskInfoGcsServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    return servicer
