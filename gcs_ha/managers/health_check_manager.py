"""The health-check manager (Ray's GcsHealthCheckManager): is each ALIVE raylet still there?
One asyncio task per checked node probes the raylet with grpc.health.v1 `Check` and calls
`on_node_death(node_id)` when it misses too many. Entry points: `add_node`,
`remove_node`, `mark_healthy`, `apply_system_config`. Timing: DESIGN.md, "Module notes".

Errors: none of its own. A failed death handler is logged with its traceback.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gcs_ha.errors import UnavailableError
from gcs_ha.managers.manager import BackgroundTasks, GcsInitData
from gcs_ha.managers.ports import RayletClientPool
from gcs_ha.managers.system_config import Setting, apply_settings
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo

log = logging.getLogger(__name__)

INITIAL_DELAY_S = 5.0  # health_check_initial_delay_ms
PERIOD_S = 3.0  # health_check_period_ms
TIMEOUT_S = 10.0  # health_check_timeout_ms
FAILURE_THRESHOLD = 5  # health_check_failure_threshold
SETTINGS = {  # Ray's system config
    "health_check_initial_delay_ms": Setting("initial_delay_s", 0.001),
    "health_check_period_ms": Setting("period_s", 0.001),
    "health_check_timeout_ms": Setting("timeout_s", 0.001),
    "health_check_failure_threshold": Setting("failure_threshold", 1, minimum=1),
}

NodeDeathHandler = Callable[[bytes], Awaitable[None]]


@dataclass
class _Checked:
    """One node under watch: its record, when it last proved alive, its check task."""

    node: GcsNodeInfo
    last_healthy: float = -math.inf
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class HealthCheckManager:
    """Health-checks raylets and reports the ones that stop answering."""

    def __init__(
        self,
        pool: RayletClientPool,
        on_node_death: NodeDeathHandler | None = None,
        *,
        initial_delay_s: float = INITIAL_DELAY_S,
        period_s: float = PERIOD_S,
        timeout_s: float = TIMEOUT_S,
        failure_threshold: int = FAILURE_THRESHOLD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(initial_delay_s, period_s, timeout_s) < 0 or failure_threshold < 1:
            raise ValueError("health check delays must be >= 0 and the threshold >= 1")
        self._pool = pool
        self._on_node_death = on_node_death
        self.initial_delay_s = initial_delay_s
        self.period_s = period_s
        self.timeout_s = timeout_s
        self.failure_threshold = failure_threshold
        self._clock = clock
        self._nodes: dict[bytes, _Checked] = {}
        self._tasks = BackgroundTasks("health_check")

    @property
    def name(self) -> str:
        return "health_check"

    def apply_system_config(self, config: Mapping[str, Any]) -> None:
        """Take the health-check settings the head's system config names (SETTINGS;
        gcs_ha.managers.system_config)."""
        apply_settings(self, config, SETTINGS)

    def set_death_handler(self, on_node_death: NodeDeathHandler) -> None:
        """Who is told that a node failed its checks (the node manager sets itself)."""
        self._on_node_death = on_node_death

    async def start(self, init: GcsInitData) -> None:
        """Start empty: the node manager adds the ALIVE nodes once serving begins."""
        self._nodes.clear()

    async def stop(self) -> None:
        """Cancel every check and forget every node."""
        self._nodes.clear()
        await self._tasks.cancel_all()

    # -- nodes under watch -------------------------------------------------------------

    def add_node(self, node: GcsNodeInfo) -> None:
        """Start checking `node` after the initial delay (no-op if already checked)."""
        node_id = bytes(node.node_id)
        if node_id in self._nodes:
            return
        checked = self._nodes[node_id] = _Checked(node)
        checked.task = self._tasks.spawn(self._watch(node_id, checked), node_id.hex()[:12])

    def remove_node(self, node_id: bytes) -> None:
        """Stop checking the node (it died or left)."""
        checked = self._nodes.pop(bytes(node_id), None)
        if checked is not None and checked.task is not None:
            checked.task.cancel()

    def mark_healthy(self, node_id: bytes) -> None:
        """The node just showed it is alive (a syncer message): skip checks for a period."""
        checked = self._nodes.get(bytes(node_id))
        if checked is not None:
            checked.last_healthy = self._clock()

    def nodes(self) -> list[bytes]:
        """The ids of the nodes being checked."""
        return list(self._nodes)

    # -- one node's checks -------------------------------------------------------------

    async def _watch(self, node_id: bytes, checked: _Checked) -> None:
        await asyncio.sleep(self.initial_delay_s)
        remaining = self.failure_threshold
        while remaining > 0:
            next_check = checked.last_healthy + self.period_s
            now = self._clock()
            if now < next_check:  # fresh news from the node: no RPC needed yet
                await asyncio.sleep(next_check - now)
                continue
            if await self._check(checked.node):
                remaining = self.failure_threshold
            else:
                remaining -= 1
                log.warning(
                    "health check of node %s failed, %d left", node_id.hex()[:12], remaining
                )
            if remaining > 0:
                await asyncio.sleep(self.period_s)
        if self._nodes.get(node_id) is checked:
            del self._nodes[node_id]  # so the death handler's remove_node spares this task
            log.warning("node %s missed too many health checks", node_id.hex())
            if self._on_node_death is not None:
                await self._on_node_death(node_id)

    async def _check(self, node: GcsNodeInfo) -> bool:
        try:
            return await self._pool.health_check(node, self.timeout_s)
        except UnavailableError as exc:
            log.debug("health check: %s", exc)
            return False
