"""Ray's two pubsub services on gcs-ha, thin servicers over the PubsubManager:
ControlPlanePubSubGcsService (GCS tables) and ObservabilityPubSubService (errors, logs,
node resource usage; also ReportJobError).

Each service talks to its own publisher (its own publisher id, sequence and subscribers),
as in Ray's GCS. Errors travel as everywhere in Ray's GCS services (gcs_ha.server.ray_call):
domain errors in the reply's `status`, which is field 100 in GcsPublishReply,
GcsSubscriberPollReply and GcsSubscriberCommandBatchReply; "not serving here" as gRPC
UNAVAILABLE, which Ray's clients retry. A long poll pending when the leader steps down
ends with UNAVAILABLE too. A poll reply never carries an error status: Ray's C++
subscriber would take it for a dead publisher and drop its per-key subscriptions.
"""

from __future__ import annotations

import grpc.aio

from gcs_ha.managers.pubsub_manager import Plane, PubsubManager
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.server.ray_call import Context, ray_call


class _PubsubMethods:
    """GcsPublish, GcsSubscriberPoll and GcsSubscriberCommandBatch on one publisher."""

    def __init__(self, manager: PubsubManager, plane: Plane) -> None:
        self._pubsub = manager
        self._plane = plane

    async def GcsPublish(
        self, request: pb.GcsPublishRequest, context: Context
    ) -> pb.GcsPublishReply:
        async def handle(reply: pb.GcsPublishReply) -> None:
            self._pubsub.publish_all(request.pub_messages)

        return await ray_call(context, pb.GcsPublishReply(), handle)

    async def GcsSubscriberPoll(
        self, request: pb.GcsSubscriberPollRequest, context: Context
    ) -> pb.GcsSubscriberPollReply:
        async def handle(reply: pb.GcsSubscriberPollReply) -> None:
            publisher = self._pubsub.plane(self._plane)
            messages = await publisher.poll(
                request.subscriber_id, request.max_processed_sequence_id, request.publisher_id
            )
            reply.publisher_id = publisher.publisher_id
            reply.pub_messages.extend(messages)

        return await ray_call(context, pb.GcsSubscriberPollReply(), handle)

    async def GcsSubscriberCommandBatch(
        self, request: pb.GcsSubscriberCommandBatchRequest, context: Context
    ) -> pb.GcsSubscriberCommandBatchReply:
        async def handle(reply: pb.GcsSubscriberCommandBatchReply) -> None:
            await self._pubsub.apply_commands(
                self._plane, request.subscriber_id, request.commands, request.sender_id
            )

        return await ray_call(context, pb.GcsSubscriberCommandBatchReply(), handle)


class ControlPlanePubSubService(_PubsubMethods, pb_grpc.ControlPlanePubSubGcsServiceServicer):
    """ray.rpc.ControlPlanePubSubGcsService: actors, jobs, nodes, worker deltas."""

    def __init__(self, manager: PubsubManager) -> None:
        super().__init__(manager, Plane.CONTROL)


class ObservabilityPubSubService(_PubsubMethods, pb_grpc.ObservabilityPubSubServiceServicer):
    """ray.rpc.ObservabilityPubSubService: errors, logs, node resource usage."""

    def __init__(self, manager: PubsubManager) -> None:
        super().__init__(manager, Plane.OBSERVABILITY)

    async def ReportJobError(
        self, request: pb.ReportJobErrorRequest, context: Context
    ) -> pb.ReportJobErrorReply:
        async def handle(reply: pb.ReportJobErrorReply) -> None:
            self._pubsub.report_job_error(request.job_error)

        return await ray_call(context, pb.ReportJobErrorReply(), handle)


def mount(server: grpc.aio.Server, manager: PubsubManager) -> None:
    """Serve both pubsub services of `manager` on `server` (the manager itself is added
    to the GcsServer by the caller, before every manager that publishes)."""
    control = ControlPlanePubSubService(manager)
    observability = ObservabilityPubSubService(manager)
    pb_grpc.add_ControlPlanePubSubGcsServiceServicer_to_server(control, server)  # type: ignore[no-untyped-call]
    pb_grpc.add_ObservabilityPubSubServiceServicer_to_server(observability, server)  # type: ignore[no-untyped-call]
