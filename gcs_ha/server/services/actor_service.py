"""Ray's ActorInfoGcsService on gcs-ha: a thin servicer over the ActorManager.

Domain errors travel in the reply's status (gcs_ha.server.ray_call): InvalidRequestError
as InvalidArgument, AlreadyExistsError as AlreadyExists (a name taken), InvalidStateError
as Invalid, NotFoundError as NotFound; availability errors abort with UNAVAILABLE and
Ray's clients replay the call, which the manager makes harmless. When CreateActor and
RegisterActor reply, and with what: DESIGN.md, "Ray's services (services/)".
"""

from __future__ import annotations

import grpc.aio

from gcs_ha.managers.actors.manager import ActorFilters, ActorManager
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.server.ray_call import Context, ray_call
from gcs_ha.server.status import RAY_CREATION_TASK_ERROR, RAY_SCHEDULING_CANCELLED

CANCELLED_MESSAGE = "Actor creation cancelled."


class ActorInfoService(pb_grpc.ActorInfoGcsServiceServicer):
    """The nine ActorInfoGcsService methods."""

    def __init__(self, manager: ActorManager) -> None:
        self._actors = manager

    async def RegisterActor(
        self, request: pb.RegisterActorRequest, context: Context
    ) -> pb.RegisterActorReply:
        async def handle(reply: pb.RegisterActorReply) -> None:
            if not await self._actors.register_actor(request.task_spec):
                reply.status.code = RAY_SCHEDULING_CANCELLED
                reply.status.message = CANCELLED_MESSAGE

        return await ray_call(context, pb.RegisterActorReply(), handle)

    async def CreateActor(
        self, request: pb.CreateActorRequest, context: Context
    ) -> pb.CreateActorReply:
        async def handle(reply: pb.CreateActorReply) -> None:
            outcome = await self._actors.create_actor(request.task_spec)
            if outcome.death_cause is not None:
                reply.death_cause.CopyFrom(outcome.death_cause)
                reply.status.code = RAY_SCHEDULING_CANCELLED
                reply.status.message = CANCELLED_MESSAGE
                return
            if outcome.address is not None:
                reply.actor_address.CopyFrom(outcome.address)
            reply.borrowed_refs.extend(outcome.borrowed_refs)
            if outcome.creation_error is not None:
                reply.status.code = RAY_CREATION_TASK_ERROR
                reply.status.message = outcome.creation_error

        return await ray_call(context, pb.CreateActorReply(), handle)

    async def GetActorInfo(
        self, request: pb.GetActorInfoRequest, context: Context
    ) -> pb.GetActorInfoReply:
        async def handle(reply: pb.GetActorInfoReply) -> None:
            record = self._actors.get_actor_info(request.actor_id)
            if record is not None:
                reply.actor_table_data.CopyFrom(record)

        return await ray_call(context, pb.GetActorInfoReply(), handle)

    async def GetNamedActorInfo(
        self, request: pb.GetNamedActorInfoRequest, context: Context
    ) -> pb.GetNamedActorInfoReply:
        async def handle(reply: pb.GetNamedActorInfoReply) -> None:
            record, spec = self._actors.get_named_actor_info(request.name, request.ray_namespace)
            reply.actor_table_data.CopyFrom(record)
            reply.task_spec.CopyFrom(spec)

        return await ray_call(context, pb.GetNamedActorInfoReply(), handle)

    async def ListNamedActors(
        self, request: pb.ListNamedActorsRequest, context: Context
    ) -> pb.ListNamedActorsReply:
        async def handle(reply: pb.ListNamedActorsReply) -> None:
            for namespace, name in self._actors.list_named_actors(
                request.all_namespaces, request.ray_namespace
            ):
                reply.named_actors_list.add(ray_namespace=namespace, name=name)

        return await ray_call(context, pb.ListNamedActorsReply(), handle)

    async def GetAllActorInfo(
        self, request: pb.GetAllActorInfoRequest, context: Context
    ) -> pb.GetAllActorInfoReply:
        async def handle(reply: pb.GetAllActorInfoReply) -> None:
            page = await self._actors.get_all_actor_info(
                show_dead_jobs=request.show_dead_jobs,
                limit=request.limit if request.HasField("limit") else None,
                filters=_filters(request) if request.HasField("filters") else None,
            )
            reply.actor_table_data.extend(page.actors)
            reply.total, reply.num_filtered = page.total, page.num_filtered

        return await ray_call(context, pb.GetAllActorInfoReply(), handle)

    async def KillActorViaGcs(
        self, request: pb.KillActorViaGcsRequest, context: Context
    ) -> pb.KillActorViaGcsReply:
        async def handle(reply: pb.KillActorViaGcsReply) -> None:
            await self._actors.kill_actor_via_gcs(
                request.actor_id, request.force_kill, request.no_restart
            )

        return await ray_call(context, pb.KillActorViaGcsReply(), handle)

    async def ReportActorOutOfScope(
        self, request: pb.ReportActorOutOfScopeRequest, context: Context
    ) -> pb.ReportActorOutOfScopeReply:
        async def handle(reply: pb.ReportActorOutOfScopeReply) -> None:
            await self._actors.report_actor_out_of_scope(
                request.actor_id, request.num_restarts_due_to_lineage_reconstruction
            )

        return await ray_call(context, pb.ReportActorOutOfScopeReply(), handle)

    async def RestartActorForLineageReconstruction(
        self, request: pb.RestartActorForLineageReconstructionRequest, context: Context
    ) -> pb.RestartActorForLineageReconstructionReply:
        async def handle(reply: pb.RestartActorForLineageReconstructionReply) -> None:
            await self._actors.restart_actor_for_lineage_reconstruction(
                request.actor_id, request.num_restarts_due_to_lineage_reconstruction
            )

        return await ray_call(context, pb.RestartActorForLineageReconstructionReply(), handle)


def _filters(request: pb.GetAllActorInfoRequest) -> ActorFilters:
    filters = request.filters
    return ActorFilters(
        actor_id=filters.actor_id if filters.HasField("actor_id") else None,
        job_id=filters.job_id if filters.HasField("job_id") else None,
        state=filters.state if filters.HasField("state") else None,
    )


def mount(server: grpc.aio.Server, manager: ActorManager) -> ActorInfoService:
    """Serve ActorInfoGcsService of `manager` on `server`."""
    servicer = ActorInfoService(manager)
    pb_grpc.add_ActorInfoGcsServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    return servicer
