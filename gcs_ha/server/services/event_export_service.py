"""Ray's RayEventExportGcsService on gcs-ha: AddEvents over the EventExportManager.

Task events in the batch go to the task manager; other kinds are counted and dropped
(gcs_ha.managers.event_export_manager says why). Every batch is accepted: the reply's
status (an AddEventsStatus, not a GcsStatus) is code 0.
"""

from __future__ import annotations

import grpc.aio

from gcs_ha.managers.event_export_manager import EventExportManager
from gcs_ha.proto.ray import events_pb2 as ev
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.server.ray_call import Context, ray_call


class RayEventExportService(pb_grpc.RayEventExportGcsServiceServicer):
    """AddEvents."""

    def __init__(self, manager: EventExportManager) -> None:
        self._events = manager

    async def AddEvents(self, request: ev.AddEventsRequest, context: Context) -> ev.AddEventsReply:
        async def handle(reply: ev.AddEventsReply) -> None:
            self._events.add_events(request.events_data)

        return await ray_call(context, ev.AddEventsReply(), handle)


def mount(server: grpc.aio.Server, manager: EventExportManager) -> RayEventExportService:
    """Serve RayEventExportGcsService of `manager` on `server`."""
    servicer = RayEventExportService(manager)
    pb_grpc.add_RayEventExportGcsServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    return servicer
