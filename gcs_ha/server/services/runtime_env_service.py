"""Ray's RuntimeEnvGcsService on gcs-ha: PinRuntimeEnvURI over the RuntimeEnvManager.

The pin lives in the leader's memory for `expiration_s` seconds (the manager's docstring
says what happens to pins across a failover). Errors: an empty URI or a negative
expiration answers InvalidArgument in the reply's status.
"""

from __future__ import annotations

import grpc.aio

from gcs_ha.managers.runtime_env_manager import RuntimeEnvManager
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.server.ray_call import Context, ray_call


class RuntimeEnvService(pb_grpc.RuntimeEnvGcsServiceServicer):
    """PinRuntimeEnvURI."""

    def __init__(self, manager: RuntimeEnvManager) -> None:
        self._runtime_envs = manager

    async def PinRuntimeEnvURI(
        self, request: pb.PinRuntimeEnvURIRequest, context: Context
    ) -> pb.PinRuntimeEnvURIReply:
        async def handle(reply: pb.PinRuntimeEnvURIReply) -> None:
            self._runtime_envs.pin_uri(request.uri, request.expiration_s)

        return await ray_call(context, pb.PinRuntimeEnvURIReply(), handle)


def mount(server: grpc.aio.Server, manager: RuntimeEnvManager) -> RuntimeEnvService:
    """Serve RuntimeEnvGcsService of `manager` on `server`."""
    servicer = RuntimeEnvService(manager)
    pb_grpc.add_RuntimeEnvGcsServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    return servicer
