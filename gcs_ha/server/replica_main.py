"""One replica process: data dir, Raft replica, and the gRPC server in front of it.

`ReplicaProcess.run` opens and locks the data dir, binds the gRPC (and HTTP) ports before
Raft starts, starts the replica, mounts `SERVICES`, serves until SIGTERM, SIGINT or the
admin Shutdown call, then stops in order (a leader hands off first). The steps in order:
DESIGN.md, "Mechanism".

Raises (before serving): DataDirError / CorruptDataError from the data dir or the replica,
ConfigError when the gRPC port cannot be bound. `run` returns the exit code: 0 after a
requested stop, 1 when `after_start` failed; when the consensus process dies the process
exits at once, 70 if that was a fatal storage error, 75 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc.aio
from grpc_health.v1 import health_pb2_grpc

# Public as grpc_health.v1.AsyncHealthServicer; imported from its module because the
# installed type stubs do not declare `health.aio`.
from grpc_health.v1._async import HealthServicer as AsyncHealthServicer

from gcs_ha.admin_auth import AdminVerifier, admin_key
from gcs_ha.consensus.api import Replica
from gcs_ha.consensus.config import ReplicaConfig
from gcs_ha.datadir import DataDir
from gcs_ha.errors import ConfigError, GcsHaError
from gcs_ha.proto import admin_pb2_grpc
from gcs_ha.ray_auth import RayAuth
from gcs_ha.ray_tls import RayTls
from gcs_ha.server import assembly
from gcs_ha.server.forwarding import MAX_MESSAGE_BYTES
from gcs_ha.server.gcs_server import GcsServer
from gcs_ha.server.handoff import HANDOFF_TIMEOUT_S, hand_off
from gcs_ha.server.http_endpoint import HttpEndpoint
from gcs_ha.server.metrics import ReplicaMetrics
from gcs_ha.server.services.admin_service import AdminService

log = logging.getLogger(__name__)

STOP_GRACE_S = 1.0

# gRPC answers calls beyond its pending-request limits (1,000 soft, 3,000 hard by
# default) with CANCELLED before a handler sees them, and Ray's clients do not retry
# CANCELLED: a driver that submits 10,000 actors at once lost thousands of them.
MAX_PENDING_REQUESTS = 1_000_000
GRPC_SERVER_OPTIONS = [
    ("grpc.so_reuseport", 0),  # two replicas can never share a port
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.server.max_pending_requests", MAX_PENDING_REQUESTS),
    ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_REQUESTS),
]


@dataclass(frozen=True)
class Services:
    """What a servicer needs from the process that mounts it."""

    replica: Replica
    health: AsyncHealthServicer
    request_shutdown: Callable[[], None]
    gcs: GcsServer
    admin: AdminVerifier


def _mount_admin(server: grpc.aio.Server, services: Services) -> None:
    servicer = AdminService(services.replica, services.request_shutdown, services.admin)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]


def _mount_health(server: grpc.aio.Server, services: Services) -> None:
    health_pb2_grpc.add_HealthServicer_to_server(services.health, server)


def _mount_ray_gcs(server: grpc.aio.Server, services: Services) -> None:
    # Every Ray GCS manager and service (gcs_ha.server.assembly). The KV service keeps
    # its read barrier: its reads go to storage on every call.
    ray = assembly.build(services.gcs, services.replica.store)
    assembly.mount(server, services.gcs, ray)


# Every service a replica serves on its gRPC port, one line each (Ray's GCS services go
# here). Their managers start in this order (dependency order) and stop in reverse.
SERVICES: tuple[Callable[[grpc.aio.Server, Services], None], ...] = (
    _mount_admin,
    _mount_health,
    _mount_ray_gcs,
)


FATAL_EXIT_CODE = 70  # the consensus process stopped on a fatal storage error
LOST_EXIT_CODE = 75  # EX_TEMPFAIL: it died otherwise (killed, out of memory): restartable


def _consensus_lost(code: int | None) -> None:
    """The replica's consensus process died: this process stops at once too, never
    serving half a replica. Exit 70 if it stopped on a fatal storage error (look before
    restarting), else 75 (a supervisor restarts the replica whole)."""
    log.critical("the consensus process is gone (exit code %s): stopping this replica", code)
    logging.shutdown()
    os._exit(FATAL_EXIT_CODE if code == FATAL_EXIT_CODE else LOST_EXIT_CODE)


def default_replica_factory(config: ReplicaConfig) -> Replica:
    """The production replica (imported lazily: the consensus layer is heavy)."""
    from gcs_ha.consensus.replica import RaftReplica  # noqa: PLC0415

    replica: Replica = RaftReplica(config, on_lost=_consensus_lost)
    return replica


class ReplicaProcess:
    """Runs one replica and its gRPC server until asked to stop."""

    def __init__(
        self,
        config: ReplicaConfig,
        replica_factory: Callable[[ReplicaConfig], Replica] = default_replica_factory,
        after_start: Callable[[ReplicaProcess], Awaitable[None]] | None = None,
        supervisor_pid: int | None = None,
        *,
        ray_auth: RayAuth | None = None,
        ray_tls: RayTls | None = None,
        listen: str | None = None,
        http_address: str | None = None,
        handoff_s: float = HANDOFF_TIMEOUT_S,
    ) -> None:
        """`ray_auth`: Ray's token authentication (gcs_ha.ray_auth), off when None;
        `ray_tls`: Ray's TLS on the gRPC port and its channels (gcs_ha.ray_tls);
        `listen`: where the gRPC port binds (None: the advertised gcs_address);
        `http_address`: where the HTTP listener binds (http_endpoint.py; None: none);
        `handoff_s`: how long a leader may take to hand off leadership on a clean stop
        (handoff.py; 0: no hand-off)."""
        self._listen = listen
        self._http_address = http_address
        self._handoff_s = handoff_s
        self.config = config
        self._ray_auth = ray_auth
        self._ray_tls = ray_tls
        self._factory = replica_factory
        self._after_start = after_start
        self._supervisor_pid = supervisor_pid
        self._stop = asyncio.Event()
        self._exit_code = 0
        self._signalled = False

    def request_stop(self, exit_code: int = 0) -> None:
        """Ask the process to stop cleanly with `exit_code` (the first request wins)."""
        if not self._stop.is_set():
            self._exit_code = exit_code
            self._stop.set()

    def _on_signal(self, sig: signal.Signals) -> None:
        """SIGTERM/SIGINT: stop cleanly; the second one exits at once, without a clean stop."""
        if self._signalled:
            log.warning("second %s: exiting without a clean stop", sig.name)
            os._exit(1)
        self._signalled = True
        log.info("%s: stopping", sig.name)
        self.request_stop()

    async def run(self) -> int:
        """Start everything, serve until asked to stop, stop; returns the exit code."""
        self._install_signal_handlers()
        cfg = self.config
        with DataDir.open(cfg.data_dir, cfg.node_id, cfg.cluster_name) as data_dir:
            if data_dir.created:
                log.info("initialised data dir %s", data_dir.path)
            replica = self._factory(cfg)
            health = AsyncHealthServicer()
            gcs = GcsServer(
                replica, health, cfg.node_id, ray_auth=self._ray_auth, ray_tls=self._ray_tls
            )
            metrics = ReplicaMetrics(replica, gcs)
            server = grpc.aio.server(
                options=GRPC_SERVER_OPTIONS, interceptors=[metrics.rpc, *gcs.routing.interceptors]
            )
            _bind(server, self._listen or cfg.gcs_address, self._ray_tls)
            http = HttpEndpoint(replica, gcs, metrics)
            if self._http_address is not None:
                await http.start(self._http_address)
            try:
                await replica.start()
            except BaseException:
                await http.stop()
                await _stop_quietly(replica)
                raise
            try:
                admin = AdminVerifier(admin_key(cfg.secret) if cfg.secret else None)
                services = Services(replica, health, self.request_stop, gcs, admin)
                await self._serve(server, services)
            finally:
                await http.stop()
                metrics.close()
                await replica.stop()
        log.info("stopped")
        return self._exit_code

    async def _serve(self, server: grpc.aio.Server, services: Services) -> None:
        """Serve the gRPC services until a stop is requested, then stop the server."""
        for mount in SERVICES:
            mount(server, services)
        await services.gcs.start()
        await server.start()
        cfg = self.config
        log.info(
            "replica %s of cluster %r up: gcs %s, raft %s",
            cfg.node_id,
            cfg.cluster_name,
            cfg.gcs_address,
            cfg.raft_address,
        )
        tasks = [asyncio.create_task(self._run_after_start())] if self._after_start else []
        if self._supervisor_pid is not None:
            tasks.append(asyncio.create_task(self._watch_supervisor(self._supervisor_pid)))
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self._stop.is_set() and self._exit_code == 0:  # a clean stop: hand off
                await hand_off(services.replica, self._handoff_s)
            await services.gcs.stop()
            await services.health.enter_graceful_shutdown()
            await server.stop(STOP_GRACE_S)

    async def _run_after_start(self) -> None:
        assert self._after_start is not None
        try:
            await self._after_start(self)
        except GcsHaError as exc:
            log.error("%s", exc)
            self.request_stop(1)
        except Exception:
            log.exception("start-up step failed")
            self.request_stop(1)

    async def _watch_supervisor(self, pid: int) -> None:
        """Stop when the supervising `gcs-ha up` is gone (this process was reparented)."""
        while os.getppid() == pid:
            await asyncio.sleep(1.0)
        log.warning("supervisor (pid %d) is gone: stopping", pid)
        self.request_stop()

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)


async def _stop_quietly(replica: Replica) -> None:
    """Release what a replica that failed to start may hold; its own error wins."""
    try:
        await replica.stop()
    except Exception:
        log.debug("stopping a replica that failed to start", exc_info=True)


def _bind(server: grpc.aio.Server, address: str, tls: RayTls | None) -> None:
    """Bind the gRPC port now (TLS with `tls`), so a port in use fails before Raft starts."""
    try:
        if tls is None:
            server.add_insecure_port(address)
        else:
            server.add_secure_port(address, tls.server_credentials())
    except RuntimeError as exc:
        raise ConfigError(
            f"cannot listen on {address} (--listen, else --gcs-address): in use or invalid"
        ) from exc
