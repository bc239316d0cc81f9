"""The autoscaler state manager (Ray's GcsAutoscalerStateManager): what `ray status` and
the autoscaler monitor read (GetClusterResourceState / GetClusterStatus), and the calls
they make (ReportAutoscalingState, RequestClusterResourceConstraint, ReportClusterConfig,
DrainNode, ResizeRayletResourceInstances). Mechanism: DESIGN.md, "Module notes".

Errors: InvalidRequestError (a node id that is not 28 bytes, a negative deadline),
NotFoundError (resize of a node that is not ALIVE), UnavailableError (resize: the raylet
could not be reached; the store's errors from ReportClusterConfig and the session name
read).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

from gcs_ha.errors import InvalidRequestError, NotFoundError, UnavailableError
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.managers.resource_manager import ResourceManager, aggregate_demand
from gcs_ha.proto.ray import autoscaler_pb2 as asc
from gcs_ha.proto.ray.common_pb2 import (
    STRICT_PACK,
    STRICT_SPREAD,
    LabelSelector,
    LabelSelectorConstraint,
    LabelSelectorOperator,
    PlacementStrategy,
)
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo, PlacementGroupTableData
from gcs_ha.proto.ray.node_manager_pb2 import DrainRayletReply, ResizeLocalResourceInstancesReply
from gcs_ha.storage.internal_kv import InternalKv

log = logging.getLogger(__name__)

NODE_ID_BYTES = 28
AUTOSCALER_NAMESPACE = b"__autoscaler"
CLUSTER_CONFIG_KEY = b"__autoscaler_cluster_config"
SESSION_NAMESPACE, SESSION_KEY = b"session", b"session_name"
PG_LABEL_PREFIX = "_PG_"

Hook = Callable[..., Awaitable[None] | None]


class AutoscalerRaylets(Protocol):
    """The raylet calls behind DrainNode and ResizeRayletResourceInstances (each raises
    UnavailableError when the raylet cannot be reached)."""

    async def drain_raylet(
        self, node: GcsNodeInfo, reason: int, reason_message: str, deadline_timestamp_ms: int
    ) -> DrainRayletReply: ...

    async def resize_local_resource_instances(
        self, node: GcsNodeInfo, resources: Mapping[str, float]
    ) -> ResizeLocalResourceInstancesReply: ...


class AutoscalerStateManager:
    """Cluster resource state for the autoscaler (a Manager: "autoscaler_state")."""

    def __init__(
        self,
        resources: ResourceManager,
        kv: InternalKv,
        raylets: AutoscalerRaylets | None = None,
        *,
        session_name: str | None = None,
        bundles_on_node: Callable[[bytes], Iterable[bytes]] | None = None,
        on_drain_requested: Hook | None = None,
        on_drain_accepted: Hook | None = None,
    ) -> None:
        self._resources = resources
        self._kv = kv
        self._raylets = raylets
        self._given_session = session_name
        self._session = session_name
        self._bundles_on_node = bundles_on_node
        self._on_drain_requested = on_drain_requested
        self._on_drain_accepted = on_drain_accepted
        self._version = 0
        self._autoscaling_state: asc.AutoscalingState | None = None
        self._constraint: asc.ClusterResourceConstraint | None = None

    # -- Manager lifecycle -------------------------------------------------------------

    @property
    def name(self) -> str:
        return "autoscaler_state"

    async def start(self, init: GcsInitData) -> None:
        """Start with no autoscaler reports; versions continue from the clock."""
        self._autoscaling_state = None
        self._constraint = None
        self._session = self._given_session
        self._version = max(self._version, int(time.time() * 1000))

    async def stop(self) -> None:
        self._autoscaling_state = None
        self._constraint = None

    # -- reads -------------------------------------------------------------------------

    async def cluster_resource_state(self) -> asc.ClusterResourceState:
        """GetClusterResourceState (and the first half of GetClusterStatus)."""
        self._version += 1
        state = asc.ClusterResourceState(
            cluster_resource_state_version=self._version,
            cluster_session_name=await self._session_name(),
        )
        if self._autoscaling_state is not None:  # the autoscaler's newest report
            version = self._autoscaling_state.autoscaler_state_version
            state.last_seen_autoscaler_state_version = version
        state.node_states.extend(self._node_states())
        state.pending_resource_requests.extend(self._pending_requests())
        state.pending_gang_resource_requests.extend(self._gang_requests())
        if self._constraint is not None:
            state.cluster_resource_constraints.append(self._constraint)
        return state

    async def cluster_status(self) -> asc.GetClusterStatusReply:
        reply = asc.GetClusterStatusReply()
        reply.cluster_resource_state.CopyFrom(await self.cluster_resource_state())
        if self._autoscaling_state is not None:
            reply.autoscaling_state.CopyFrom(self._autoscaling_state)
        return reply

    # -- autoscaler reports ------------------------------------------------------------

    def report_autoscaling_state(self, state: asc.AutoscalingState) -> None:
        """Keep `state` unless an newer one was already reported."""
        kept = self._autoscaling_state
        if kept is not None and state.autoscaler_state_version < kept.autoscaler_state_version:
            log.info(
                "ignoring autoscaling state %d (have %d)",
                state.autoscaler_state_version,
                kept.autoscaler_state_version,
            )
            return
        if state.infeasible_resource_requests and (
            kept is None
            or len(state.infeasible_resource_requests) > len(kept.infeasible_resource_requests)
        ):
            log.warning("the autoscaler reports resource requests no node type can satisfy")
        self._autoscaling_state = asc.AutoscalingState()
        self._autoscaling_state.CopyFrom(state)

    def request_cluster_resource_constraint(
        self, constraint: asc.ClusterResourceConstraint
    ) -> None:
        self._constraint = asc.ClusterResourceConstraint()
        self._constraint.CopyFrom(constraint)

    async def report_cluster_config(self, config: asc.ClusterConfig) -> None:
        await self._kv.put(
            AUTOSCALER_NAMESPACE, CLUSTER_CONFIG_KEY, config.SerializeToString(), overwrite=True
        )

    # -- drain and resize --------------------------------------------------------------

    async def drain_node(self, request: asc.DrainNodeRequest) -> asc.DrainNodeReply:
        node_id = _check_node_id(request.node_id)
        if request.deadline_timestamp_ms < 0:
            raise InvalidRequestError(
                f"Draining deadline must be non-negative, received {request.deadline_timestamp_ms}"
            )
        node = self._resources.alive_nodes().get(node_id)
        if node is None:  # dead or unknown: nothing runs there any more
            return asc.DrainNodeReply(is_accepted=True)
        log.info("draining node %s: %s", node_id.hex(), request.reason_message)
        await _run_hook(self._on_drain_requested, node_id)
        raylets = self._require_raylets()
        try:
            reply = await raylets.drain_raylet(
                node, request.reason, request.reason_message, request.deadline_timestamp_ms
            )
        except UnavailableError as exc:
            return asc.DrainNodeReply(
                is_accepted=False, rejection_reason_message=f"raylet unreachable: {exc}"
            )
        if not reply.is_accepted:
            return asc.DrainNodeReply(
                is_accepted=False, rejection_reason_message=reply.rejection_reason_message
            )
        self._resources.set_node_draining(node_id, request.deadline_timestamp_ms)
        await _run_hook(self._on_drain_accepted, node_id, request)
        return asc.DrainNodeReply(is_accepted=True)

    async def resize_raylet_resource_instances(
        self, node_id: bytes, resources: Mapping[str, float]
    ) -> dict[str, float]:
        node_id = _check_node_id(node_id)
        node = self._resources.alive_nodes().get(node_id)
        if node is None:
            raise NotFoundError(f"Raylet {node_id.hex()} is not alive.")
        reply = await self._require_raylets().resize_local_resource_instances(node, resources)
        return dict(reply.total_resources)

    # -- internals ---------------------------------------------------------------------

    def _require_raylets(self) -> AutoscalerRaylets:
        if self._raylets is None:
            raise UnavailableError("no raylet client configured")
        return self._raylets

    async def _session_name(self) -> str:
        if self._session is None:
            value = await self._kv.get(SESSION_NAMESPACE, SESSION_KEY)
            if value is not None:
                self._session = value.decode(errors="replace")
        return self._session or ""

    def _node_states(self) -> list[asc.NodeState]:
        alive = [self._alive_state(n) for n in self._resources.alive_nodes().values()]
        dead = [self._base_state(node, asc.DEAD) for node in self._resources.dead_nodes().values()]
        return alive + dead

    def _base_state(self, node: GcsNodeInfo, status: int) -> asc.NodeState:
        return asc.NodeState(
            node_id=node.node_id,
            instance_id=node.instance_id,
            ray_node_type_name=node.node_type_name,
            node_state_version=self._version,
            node_ip_address=node.node_manager_address,
            instance_type_name=node.instance_type_name,
            status=status,  # type: ignore[arg-type]
        )

    def _alive_state(self, node: GcsNodeInfo) -> asc.NodeState:
        node_id = bytes(node.node_id)
        state = self._base_state(node, asc.RUNNING)
        state.node_activity.extend(self._resources.node_activity(node_id))
        pulled = self._resources.pulled_usage(node_id)
        if pulled is not None:
            data = pulled.data
            if data.is_draining:
                state.status = asc.DRAINING
            elif data.idle_duration_ms > 0:
                state.status = asc.IDLE
                since_ms = int((time.monotonic() - pulled.at) * 1000)
                state.idle_duration_ms = data.idle_duration_ms + since_ms
            state.available_resources.update(data.resources_available)
            state.total_resources.update(data.resources_total)
        if self._bundles_on_node is not None:
            for pg_id in self._bundles_on_node(node_id):
                state.dynamic_labels[PG_LABEL_PREFIX + bytes(pg_id).hex()] = ""
        state.labels.update(node.labels)
        return state

    def _pending_requests(self) -> list[asc.ResourceRequestByCount]:
        reports = []
        for node_id in self._resources.alive_nodes():
            pulled = self._resources.pulled_usage(node_id)
            if pulled is not None:
                reports.append(pulled.data)
        requests = []
        for demand in aggregate_demand(reports):
            count = (
                demand.num_ready_requests_queued
                + demand.num_infeasible_requests_queued
                + demand.backlog_size
            )
            if count > 0:
                request = asc.ResourceRequest(resources_bundle=dict(demand.shape))
                request.label_selectors.extend(demand.label_selectors)
                requests.append(asc.ResourceRequestByCount(request=request, count=count))
        return requests

    def _gang_requests(self) -> list[asc.GangResourceRequest]:
        load = self._resources.placement_group_load()
        if load is None:
            return []
        pending = (PlacementGroupTableData.PENDING, PlacementGroupTableData.RESCHEDULING)
        return [_gang_request(pg) for pg in load.placement_group_data if pg.state in pending]


def _gang_request(pg: PlacementGroupTableData) -> asc.GangResourceRequest:
    """One placement group's unplaced bundles as an all-or-nothing request."""
    pg_hex = pg.placement_group_id.hex()
    constraint = _pg_constraint(pg_hex, pg.strategy)
    gang = asc.GangResourceRequest(details=_pg_details(pg))
    selector = gang.bundle_selectors.add()
    for bundle in pg.bundles:
        if _is_placed(bundle.node_id):
            continue  # placed already (a RESCHEDULING group keeps its live bundles)
        for request in (gang.requests.add(), selector.resource_requests.add()):
            request.resources_bundle.update(bundle.unit_resources)
            if constraint is not None:
                request.placement_constraints.append(constraint)
        if bundle.label_selector:
            selector.resource_requests[-1].label_selectors.append(
                parse_label_selector(bundle.label_selector)
            )
    return gang


def _is_placed(node_id: bytes) -> bool:
    """A bundle's node id names a node (Ray's nil id is empty or all 0xff bytes)."""
    return bool(node_id) and node_id != b"\xff" * len(node_id)


def _pg_constraint(pg_hex: str, strategy: int) -> asc.PlacementConstraint | None:
    label = asc.AntiAffinityConstraint(label_name=PG_LABEL_PREFIX + pg_hex, label_value="")
    if strategy == STRICT_SPREAD:
        return asc.PlacementConstraint(anti_affinity=label)
    if strategy == STRICT_PACK:
        return asc.PlacementConstraint(
            affinity=asc.AffinityConstraint(label_name=label.label_name, label_value="")
        )
    return None


def _pg_details(pg: PlacementGroupTableData) -> str:
    strategy = PlacementStrategy.Name(pg.strategy)
    state = PlacementGroupTableData.PlacementGroupState.Name(pg.state)
    return f"{pg.placement_group_id.hex()}:{strategy}|{state}"


def parse_label_selector(selector: Mapping[str, str]) -> LabelSelector:
    """Ray's label selector strings ("v", "!v", "in(a,b)", "!in(a,b)") as a LabelSelector."""
    parsed = LabelSelector()
    for key, raw in selector.items():
        negated = raw.startswith("!")
        value = raw[1:] if negated else raw
        if value.startswith("in(") and value.endswith(")"):
            values = sorted({v for v in value[3:-1].split(",") if v})
        else:
            values = [value]
        operator = (
            LabelSelectorOperator.LABEL_OPERATOR_NOT_IN
            if negated
            else LabelSelectorOperator.LABEL_OPERATOR_IN
        )
        parsed.label_constraints.append(
            LabelSelectorConstraint(label_key=key, operator=operator, label_values=values)
        )
    return parsed


def _check_node_id(node_id: bytes) -> bytes:
    if len(node_id) != NODE_ID_BYTES:
        raise InvalidRequestError(
            f"Expected node_id to be {NODE_ID_BYTES} bytes, but got {len(node_id)} bytes."
        )
    return bytes(node_id)


async def _run_hook(hook: Hook | None, *args: object) -> None:
    if hook is None:
        return
    result = hook(*args)
    if inspect.isawaitable(result):
        await result
