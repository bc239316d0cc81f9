"""GcsServer: Ray's GCS server lifecycle, driven by leadership (a LeadershipListener).

Promotion (`on_serving(term)`, after the replica's barrier of `term` is applied), one unit:
  1. read every table once into `GcsInitData`, from the local LMDB without read barriers
     (`tables`, see below);
  2. learn the cluster id (made and stored by the first leader ever) and write the
     GCS-owned KV keys that must exist before Ray's first call;
  3. start the managers in the order they were added (`Manager.start(init)`);
  4. serve: the gRPC health service says SERVING, Ray's calls reach the typed servicers;
  5. run the after-serving hooks as background tasks of the term (gcs_pid now; later
     NotifyGCSRestart / ReleaseUnused* to every ALIVE raylet and raylet health checks
     with a grace period: add them with `add_after_serving`).
A step that fails stops what was started, is logged, and the promotion is retried with
backoff while the term lasts: a leader never serves half started.

Demotion (`on_demoted()`), one unit: stop serving at once (health NOT_SERVING, Ray's
calls routed elsewhere), cancel the promotion if it is still running and the term's
hooks, then stop every manager whose start was called, in reverse order. Transitions
are serialised: a promotion starts only after the previous demotion finished.

Reads without barriers: `tables` is a GcsTableStorage over the replica's store with
its read barrier off (writes are unchanged: replicated, acknowledged after commit).
On the serving leader local LMDB holds every entry committed before its term (the
promotion barrier) and every write it acknowledged since, so a local read returns what
a barrier read would, one Raft round trip sooner. The only difference is a deposed
leader that has not noticed yet (at most `leader_fallback_s`, 0.6 s): it could read stale
data, exactly as stale as the managers' in-memory state, and it cannot commit a write.
The internal KV keeps its own read barrier (its reads go to storage on every call).

Every replica also watches who leads (`LeaderView`, the replica's status polled every
`poll_s`): forwarding uses it, a follower learns the cluster id from the leader once,
and the health service's "gcs-ha.forwarding" says whether this replica can answer
Ray's calls now (serving, or a leader is known to forward to). The overall status ""
is SERVING on the serving leader only, so load balancers that health-check prefer it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from grpc_health.v1 import health_pb2

# Public as grpc_health.v1.AsyncHealthServicer; imported from its module because the
# installed type stubs do not declare `health.aio`.
from grpc_health.v1._async import HealthServicer as AsyncHealthServicer

from gcs_ha import unsafe
from gcs_ha.consensus.api import ROLE_LEADER, Replica, ReplicaStatusInfo
from gcs_ha.consensus.replicated_store import ReplicatedStoreClient
from gcs_ha.errors import GcsHaError, UnavailableError
from gcs_ha.managers.manager import BackgroundTasks, GcsInitData, Manager
from gcs_ha.ray_auth import RayAuth
from gcs_ha.ray_tls import RayTls
from gcs_ha.server import cluster_id as cid
from gcs_ha.server.forwarding import (
    HOLD_S,
    Forwarder,
    ForwardingInterceptor,
    Interceptor,
    LeaderChannel,
    RoutingState,
    outbound_marker,
)
from gcs_ha.server.leader_history import LeaderHistory
from gcs_ha.server.parse_guard import ParseGuardInterceptor
from gcs_ha.server.token_auth import TokenAuthInterceptor
from gcs_ha.storage.store_client import StoreClient
from gcs_ha.storage.tables import GcsTableStorage

log = logging.getLogger(__name__)

HEALTH_OVERALL = ""
HEALTH_FORWARDING = "gcs-ha.forwarding"
POLL_S = 0.05
RETRY_MIN_S, RETRY_MAX_S = 0.5, 5.0
STOP_TIMEOUT_S = 10.0  # a manager's stop that takes longer is logged and left behind
FETCH_EVERY_S = 0.5

AfterServing = Callable[[GcsInitData], Coroutine[Any, Any, None]]


def without_read_barrier(store: StoreClient) -> StoreClient:
    """A view of `store` whose reads skip the replicated store's read barrier (the
    module docstring says why that is safe for the managers); other stores as they are."""
    if isinstance(store, ReplicatedStoreClient):
        return store.without_read_barrier()
    return store


class LeaderView:
    """Who leads, as this replica sees it (refreshed from the replica's status)."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica
        self.leader_node_id: str | None = None
        self.is_self = False
        self.address: str | None = None  # the leader's GCS address when it is another replica
        self.term = 0
        self.has_quorum = False  # this replica hears from a majority (Raft's view)
        self.closed = False
        self._changed = asyncio.Event()

    def refresh(self) -> bool:
        """Read the replica's status; True when the leader changed."""
        try:
            status: ReplicaStatusInfo | None = self._replica.status()
        except GcsHaError:
            status = None
        seen = _leader_of(status)
        self.term = status.term if status is not None else self.term
        self.has_quorum = status is not None and status.has_quorum
        changed = seen != (self.leader_node_id, self.is_self, self.address)
        self.leader_node_id, self.is_self, self.address = seen
        return changed

    def notify(self) -> None:
        """Wake every call waiting in `next_change`."""
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def next_change(self, timeout: float) -> None:
        """Wait for the next refresh or serving change, at most `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), max(timeout, 0.0))


def _leader_of(status: ReplicaStatusInfo | None) -> tuple[str | None, bool, str | None]:
    """(leader node id, whether it is this replica, its GCS address if another one)."""
    if status is None:
        return None, False, None
    leader = status.leader_node_id
    if status.role == ROLE_LEADER or (leader is not None and leader == status.node_id):
        return status.node_id, True, None
    if leader is None:
        return None, False, None
    address = next((m.gcs_address for m in status.members if m.node_id == leader), "")
    return leader, False, address or None


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


def _with_local_kv_get(answers: Callable[[str], bool]) -> Callable[[str], bool]:
    """The unsafe follower-reads switch: InternalKVGet is answered wherever it arrives."""
    return lambda method: method == unsafe.KV_GET_METHOD or answers(method)


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
        self.cluster_id = cid.ClusterId()
        self.view = LeaderView(replica)
        self.leader_history = LeaderHistory()
        self._node_id = node_id
        self._poll_s = poll_s
        self._channels = LeaderChannel(ray_tls)
        state = RoutingState(
            serving=self.is_serving,
            leader_is_self=lambda: self.view.is_self,
            leader_address=lambda: self.view.address,
            closed=lambda: self.view.closed,
            next_change=self.view.next_change,
        )
        answers_locally: Callable[[str], bool] = self.cluster_id.answers_locally
        if unsafe.follower_reads():
            answers_locally = _with_local_kv_get(answers_locally)
        self.forwarder = Forwarder(node_id, self._channels)
        forwarding = ForwardingInterceptor(state, self.forwarder, answers_locally, hold_s)
        # Server interceptors, outermost first: give them to grpc.aio.server(...).
        token: list[Interceptor] = (
            [TokenAuthInterceptor(self.ray_auth)] if self.ray_auth.enabled else []
        )
        self.interceptors = [
            *token,
            cid.ClusterIdInterceptor(self.cluster_id),
            forwarding,
            ParseGuardInterceptor(),
        ]
        self._health = _Health(health)
        self._managers: list[Manager] = []
        self._after_serving: list[AfterServing] = [self._write_gcs_pid]
        self._tables: GcsTableStorage | None = None
        self._serving_term: int | None = None
        self._started: list[Manager] = []
        self._promotion: asyncio.Task[None] | None = None
        self._transition: asyncio.Task[None] | None = None
        self._term_tasks = BackgroundTasks("gcs-term")
        self._watch: asyncio.Task[None] | None = None
        self._fetch: asyncio.Task[None] | None = None
        self._next_fetch = 0.0
        self._stopped = False

    # -- building (before start) -------------------------------------------------------

    @property
    def tables(self) -> GcsTableStorage:
        """The managers' tables (reads local, no barrier); available once the replica
        has started."""
        if self._tables is None:
            self._tables = GcsTableStorage(without_read_barrier(self.replica.store))
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
        if self.is_serving():
            return True
        address = self.view.address
        return (
            address is not None and self.view.has_quorum and self._channels.reachable(address)
        )

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
        self._watch = asyncio.get_running_loop().create_task(self._watch_leader(), name="gcs-watch")

    async def stop(self) -> None:
        """Stop serving and every manager; route nothing more (process shutdown)."""
        self.on_demoted()
        self._stopped = True
        self.view.closed = True
        self.view.notify()
        for task in (self._watch, self._fetch):
            if task is not None:
                task.cancel()
        if self._transition is not None:
            await asyncio.wait([self._transition])
        await self._channels.close()

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
        self.view.notify()

    async def _write_gcs_pid(self, init: GcsInitData) -> None:
        await cid.write_gcs_pid(self.tables.internal_kv)

    # -- following the leader ----------------------------------------------------------

    def _update_forwarding_health(self) -> None:
        self._health.set(HEALTH_FORWARDING, self.can_answer())

    async def _watch_leader(self) -> None:
        while True:
            try:
                self._follow_leader()
            except Exception:  # keep following; a failure here must not stop routing
                log.exception("following the GCS leader failed")
            self.view.notify()
            await asyncio.sleep(self._poll_s)

    def _follow_leader(self) -> None:
        view = self.view
        changed = view.refresh()
        self.leader_history.observe(view.leader_node_id if view.has_quorum else None, view.term)
        if changed:
            log.info("GCS leader: %s", view.leader_node_id or "none")
            if view.address != self._channels.address:
                self._channels.retire()
        address = self.view.address
        if address is not None:
            self._channels.get(address)  # connect early; notice a dead leader early
            self._maybe_fetch_cluster_id(address)
        self._update_forwarding_health()

    def _maybe_fetch_cluster_id(self, address: str) -> None:
        """A follower that does not know the cluster id yet asks the leader (at most one
        request at a time, every FETCH_EVERY_S)."""
        loop = asyncio.get_running_loop()
        busy = self._fetch is not None and not self._fetch.done()
        if self.cluster_id.value is not None or busy or loop.time() < self._next_fetch:
            return
        self._next_fetch = loop.time() + FETCH_EVERY_S
        self._fetch = loop.create_task(self._fetch_cluster_id(address), name="gcs-cluster-id")

    async def _fetch_cluster_id(self, address: str) -> None:
        try:
            channel = self._channels.get(address)
            metadata = (*outbound_marker(self._node_id), *self.ray_auth.metadata())
            value = await cid.fetch_from_leader(channel, metadata)
            self.cluster_id.learn(value)
        except UnavailableError as exc:
            log.debug("cluster id not learned yet: %s", exc)
        except Exception:
            log.exception("learning the cluster id from the leader at %s failed", address)
