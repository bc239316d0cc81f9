"""GcsServer: Ray's GCS server lifecycle, driven by leadership (a LeadershipListener).

Promotion (`on_serving`) reads the init data, starts the managers in order and serves;
demotion (`on_demoted`) stops serving at once and stops the managers in reverse. It
publishes the health service's "" and "gcs-ha.forwarding". Following the leader and
routing Ray's calls are routing.py's. Steps and decisions: server/DESIGN.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from grpc_health.v1 import health_pb2

# Public as grpc_health.v1.AsyncHealthServicer; imported from its module because the
# installed type stubs do not declare `health.aio`.
from grpc_health.v1._async import HealthServicer as AsyncHealthServicer

from gcs_ha.consensus.api import Replica
from gcs_ha.managers.manager import BackgroundTasks, GcsInitData, Manager
from gcs_ha.ray_auth import RayAuth
from gcs_ha.ray_tls import RayTls
from gcs_ha.server import cluster_id as cid
from gcs_ha.server.forwarding import HOLD_S
from gcs_ha.server.routing import POLL_S, Routing
from gcs_ha.storage.tables import GcsTableStorage

log = logging.getLogger(__name__)

HEALTH_OVERALL = ""
HEALTH_FORWARDING = "gcs-ha.forwarding"
RETRY_MIN_S, RETRY_MAX_S = 0.5, 5.0
STOP_TIMEOUT_S = 10.0  # a manager's stop that takes longer is logged and left behind

AfterServing = Callable[[GcsInitData], Coroutine[Any, Any, None]]


class _Health:
    """Publishes serving states to the gRPC health service (its `set` is a coroutine)."""

    def __init__(self, servicer: AsyncHealthServicer) -> None:
        self._servicer = servicer
        self._wanted: dict[str, bool] = {}
        self._tasks = BackgroundTasks("health")

    def set(self, service: str, serving: bool) -> None:
        if self._wanted.get(service) is not serving:
            self._wanted[service] = serving
            self._tasks.spawn(self._sync(service), service or "overall")

    async def sync_now(self) -> None:
        """Publish every wanted state now (before the gRPC server starts answering)."""
        for service in list(self._wanted):
            await self._sync(service)

    async def _sync(self, service: str) -> None:
        status = health_pb2.HealthCheckResponse
        serving = self._wanted[service]  # the latest wish, whatever order tasks run in
        await self._servicer.set(service, status.SERVING if serving else status.NOT_SERVING)


class GcsServer:
    """Promotes and demotes the GCS managers with leadership; routes Ray's calls."""

    def __init__(
        self,
        replica: Replica,
        health: AsyncHealthServicer,
        node_id: str,
        *,
        hold_s: float = HOLD_S,
        poll_s: float = POLL_S,
        ray_auth: RayAuth | None = None,
        ray_tls: RayTls | None = None,
    ) -> None:
        """`ray_auth`: Ray's token authentication (gcs_ha.ray_auth), off when None;
        `ray_tls`: Ray's TLS (gcs_ha.ray_tls) for the channels this server opens."""
        self.replica = replica
        self.ray_auth = ray_auth or RayAuth()
        self.ray_tls = ray_tls
        self.routing = Routing(
            replica,
            node_id,
            serving=self.is_serving,
            on_refresh=self._update_forwarding_health,
            hold_s=hold_s,
            poll_s=poll_s,
            ray_auth=self.ray_auth,
            ray_tls=ray_tls,
        )
        self.cluster_id = self.routing.cluster_id  # learned at promotion, or from the leader
        self._health = _Health(health)
        self._managers: list[Manager] = []
        self._after_serving: list[AfterServing] = [self._write_gcs_pid]
        self._tables: GcsTableStorage | None = None
        self._serving_term: int | None = None
        self._started: list[Manager] = []
        self._promotion: asyncio.Task[None] | None = None
        self._transition: asyncio.Task[None] | None = None
        self._term_tasks = BackgroundTasks("gcs-term")
        self._stopped = False

    # -- building (before start) -------------------------------------------------------

    @property
    def tables(self) -> GcsTableStorage:
        """The managers' tables (reads local, no barrier); available once the replica
        has started."""
        if self._tables is None:
            self._tables = GcsTableStorage(self.replica.store_without_read_barrier())
        return self._tables

    def add_manager(self, manager: Manager) -> None:
        """Add a manager; managers start in the order added and stop in reverse."""
        self._managers.append(manager)

    def add_after_serving(self, hook: AfterServing) -> None:
        """Run `hook(init)` as a background task each time this replica starts serving;
        it is cancelled on demotion."""
        self._after_serving.append(hook)

    # -- state -------------------------------------------------------------------------

    def is_serving(self) -> bool:
        return self._serving_term is not None

    def can_answer(self) -> bool:
        """Whether Ray's calls get answered here (the health service's
        "gcs-ha.forwarding", the HTTP listener's /readyz): this replica serves, or it
        hears from a majority and forwards to a leader its channel reaches. A follower
        cut off from the majority keeps its last leader's name (pysyncobj stands for no
        election while it reaches nobody): it is not ready, even if that leader is
        alive."""
        if self._stopped:
            return False
        return self.is_serving() or self.routing.can_forward()

    @property
    def serving_term(self) -> int | None:
        return self._serving_term

    # -- process lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Follow leadership from now on (call once the replica has started)."""
        self._health.set(HEALTH_OVERALL, False)
        self._health.set(HEALTH_FORWARDING, False)
        await self._health.sync_now()  # the servicer starts out saying SERVING
        self.replica.add_listener(self)
        status = self.replica.status()
        if status.serving:  # promoted before we listened; no event can interleave here
            self.on_serving(status.term)
        self.routing.start()

    async def stop(self) -> None:
        """Stop serving and every manager; route nothing more (process shutdown)."""
        self.on_demoted()
        self._stopped = True
        self.routing.close()
        if self._transition is not None:
            await asyncio.wait([self._transition])
        await self.routing.close_channels()

    # -- LeadershipListener ------------------------------------------------------------

    def on_serving(self, term: int) -> None:
        if self._stopped:
            return
        if self._serving_term is not None or self._promotion is not None:
            self.on_demoted()  # never two terms at once
        prev = self._transition
        task = asyncio.get_running_loop().create_task(
            self._promote(term, prev), name=f"gcs-promote-{term}"
        )
        self._promotion = self._transition = task

    def on_demoted(self) -> None:
        was_term, promotion = self._serving_term, self._promotion
        self._promotion = None
        self._set_serving(None)
        self._term_tasks.cancel()
        if promotion is not None:
            promotion.cancel()
        if was_term is None and promotion is None:
            return
        prev = self._transition
        self._transition = asyncio.get_running_loop().create_task(
            self._demote(prev), name="gcs-demote"
        )

    # -- transitions -------------------------------------------------------------------

    async def _promote(self, term: int, prev: asyncio.Task[None] | None) -> None:
        if prev is not None:
            await asyncio.wait([prev])
        delay = RETRY_MIN_S
        while True:
            try:
                init = await self._start_term()
                break
            except Exception:
                log.exception("starting the GCS for term %d failed; retry in %.1f s", term, delay)
                await self._stop_started()
                await asyncio.sleep(delay)
                delay = min(2 * delay, RETRY_MAX_S)
        self._promotion = None
        self._set_serving(term)
        for hook in self._after_serving:
            self._term_tasks.spawn(hook(init), getattr(hook, "__name__", "hook"))

    async def _start_term(self) -> GcsInitData:
        tables = self.tables
        init = await GcsInitData.load(tables)
        self.cluster_id.learn(await cid.load_or_create(tables.internal_kv))
        await cid.write_keys_before_serving(tables.internal_kv)
        for manager in self._managers:
            self._started.append(manager)  # stopped even if its start is cut short
            await manager.start(init)
        return init

    async def _demote(self, prev: asyncio.Task[None] | None) -> None:
        if prev is not None:
            await asyncio.wait([prev])
        await self._term_tasks.cancel_all()
        await self._stop_started()

    async def _stop_started(self) -> None:
        """Stop every manager whose start was called, last started first."""
        while self._started:
            manager = self._started.pop()
            try:
                await asyncio.wait_for(manager.stop(), STOP_TIMEOUT_S)
            except Exception:
                log.exception("stopping manager %s failed", manager.name)

    def _set_serving(self, term: int | None) -> None:
        if term == self._serving_term:
            return
        self._serving_term = term
        if term is None:
            log.info("GCS not serving")
        else:
            log.info("GCS serving as leader of term %d", term)
        self._health.set(HEALTH_OVERALL, term is not None)
        self._update_forwarding_health()
        self.routing.view.notify()

    async def _write_gcs_pid(self, init: GcsInitData) -> None:
        await cid.write_gcs_pid(self.tables.internal_kv)

    def _update_forwarding_health(self) -> None:
        self._health.set(HEALTH_FORWARDING, self.can_answer())
