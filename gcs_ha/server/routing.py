"""Where Ray's calls go: who leads as this replica sees it (`LeaderView`, the replica's
status polled), the channel to that leader, the server interceptors in their order, and
the cluster id a follower learns from the leader. `GcsServer` owns one `Routing`; the
forwarding itself is forwarding.py's. Decisions: server/DESIGN.md, "Routing Ray's calls".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from gcs_ha import unsafe
from gcs_ha.consensus.api import ROLE_LEADER, Replica, ReplicaStatusInfo
from gcs_ha.errors import GcsHaError, UnavailableError
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

log = logging.getLogger(__name__)

POLL_S = 0.05
FETCH_EVERY_S = 0.5


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


def _with_local_kv_get(answers: Callable[[str], bool]) -> Callable[[str], bool]:
    """The unsafe follower-reads switch: InternalKVGet is answered wherever it arrives."""
    return lambda method: method == unsafe.KV_GET_METHOD or answers(method)


class Routing:
    """Follows the leader (every `poll_s`) and routes Ray's calls to it."""

    def __init__(
        self,
        replica: Replica,
        node_id: str,
        serving: Callable[[], bool],
        on_refresh: Callable[[], None],
        *,
        hold_s: float = HOLD_S,
        poll_s: float = POLL_S,
        ray_auth: RayAuth,
        ray_tls: RayTls | None = None,
    ) -> None:
        """`serving`: whether this replica serves now; `on_refresh`: called after every
        poll of the leader (the server's forwarding health follows it)."""
        self.cluster_id = cid.ClusterId()
        self.view = LeaderView(replica)
        self.leader_history = LeaderHistory()
        self.channels = LeaderChannel(ray_tls)
        self.forwarder = Forwarder(node_id, self.channels)
        self._node_id = node_id
        self._ray_auth = ray_auth
        self._poll_s = poll_s
        self._on_refresh = on_refresh
        self._watch: asyncio.Task[None] | None = None
        self._fetch: asyncio.Task[None] | None = None
        self._next_fetch = 0.0
        state = RoutingState(
            serving=serving,
            leader_is_self=lambda: self.view.is_self,
            leader_address=lambda: self.view.address,
            closed=lambda: self.view.closed,
            next_change=self.view.next_change,
        )
        answers_locally: Callable[[str], bool] = self.cluster_id.answers_locally
        if unsafe.follower_reads():
            answers_locally = _with_local_kv_get(answers_locally)
        forwarding = ForwardingInterceptor(state, self.forwarder, answers_locally, hold_s)
        # Server interceptors, outermost first: give them to grpc.aio.server(...).
        token: list[Interceptor] = [TokenAuthInterceptor(ray_auth)] if ray_auth.enabled else []
        self.interceptors = [
            *token,
            cid.ClusterIdInterceptor(self.cluster_id),
            forwarding,
            ParseGuardInterceptor(),
        ]

    def start(self) -> None:
        """Follow the leader from now on."""
        self._watch = asyncio.get_running_loop().create_task(self._watch_leader(), name="gcs-watch")

    def close(self) -> None:
        """Route nothing more: held calls give up, the polls and the id fetch stop."""
        self.view.closed = True
        self.view.notify()
        for task in (self._watch, self._fetch):
            if task is not None:
                task.cancel()

    async def close_channels(self) -> None:
        await self.channels.close()

    def can_forward(self) -> bool:
        """This replica hears from a majority and its channel reaches the leader it knows
        (a follower cut off from the majority keeps its last leader's name: pysyncobj
        stands for no election while it reaches nobody)."""
        address = self.view.address
        return address is not None and self.view.has_quorum and self.channels.reachable(address)

    # -- following the leader ----------------------------------------------------------

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
            if view.address != self.channels.address:
                self.channels.retire()
        address = self.view.address
        if address is not None:
            self.channels.get(address)  # connect early; notice a dead leader early
            self._maybe_fetch_cluster_id(address)
        self._on_refresh()

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
            channel = self.channels.get(address)
            metadata = (*outbound_marker(self._node_id), *self._ray_auth.metadata())
            value = await cid.fetch_from_leader(channel, metadata)
            self.cluster_id.learn(value)
        except UnavailableError as exc:
            log.debug("cluster id not learned yet: %s", exc)
        except Exception:
            log.exception("learning the cluster id from the leader at %s failed", address)
