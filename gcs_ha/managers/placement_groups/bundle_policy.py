"""Where a placement group's bundles go: the four strategies (PACK, SPREAD, STRICT_PACK,
STRICT_SPREAD) over a cluster resource view, following Ray's bundle scheduling
policies. Pure functions, no I/O: `place` returns one node per bundle, or FAILED (retry
later) or INFEASIBLE (wait for a new node). Rules: placement_groups/DESIGN.md,
"Module notes".
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from gcs_ha.proto.ray.common_pb2 import PACK, SPREAD, STRICT_PACK, STRICT_SPREAD, Bundle

SCALE = 10_000  # Ray's FixedPoint resolution
GPU, CPU, MEMORY, OBJECT_STORE_MEMORY = "GPU", "CPU", "memory", "object_store_memory"
PREDEFINED = frozenset({CPU, GPU, MEMORY, OBJECT_STORE_MEMORY})


def fixed(value: float) -> int:
    """A resource amount in Ray's fixed point."""
    return round(value * SCALE)


def fixed_map(resources: Mapping[str, float]) -> dict[str, int]:
    """Resource amounts in fixed point, zero amounts dropped."""
    return {name: amount for name, value in resources.items() if (amount := fixed(value))}


def fixed_subset(resources: Mapping[str, float], names: Collection[str]) -> dict[str, int]:
    """`fixed_map` of the resources `names` only (looked up, not scanned)."""
    return {name: amount for name in names if (amount := fixed(resources.get(name, 0.0)))}


class Status(enum.Enum):
    SUCCESS = "success"
    FAILED = "failed"
    INFEASIBLE = "infeasible"


@dataclass(frozen=True)
class NodeResources:
    """One candidate node: available and total resources (fixed point) and labels."""

    available: Mapping[str, int]
    total: Mapping[str, int]
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BundleRequest:
    """One bundle's demand: resources (fixed point, no zeros) and label selector."""

    resources: Mapping[str, int]
    label_selector: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, bundle: Bundle) -> BundleRequest:
        return cls(fixed_map(bundle.unit_resources), dict(bundle.label_selector))


@dataclass(frozen=True)
class Placement:
    """The policy's answer; `nodes[i]` is the node of request i when SUCCESS."""

    status: Status
    nodes: tuple[bytes, ...] = ()


def place(
    strategy: int,
    requests: Sequence[BundleRequest],
    nodes: Mapping[bytes, NodeResources],
    *,
    soft_target: bytes | None = None,
    avoid: Collection[bytes] = (),
) -> Placement:
    """Choose a node for every request with `strategy` (a PlacementStrategy value)."""
    if not requests:
        return Placement(Status.SUCCESS)
    if strategy == STRICT_PACK:
        return _strict_pack(requests, nodes, soft_target)
    if strategy == STRICT_SPREAD:
        return _strict_spread(requests, {n: r for n, r in nodes.items() if n not in avoid})
    if strategy == SPREAD:
        return _spread(requests, nodes)
    if strategy == PACK:
        return _pack(requests, nodes)
    raise ValueError(f"unknown placement strategy {strategy}")


# -- node tests ------------------------------------------------------------------------


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Ray's label selector strings: "v" (equals), "!v" (differs or absent),
    "in(a,b)" (one of), "!in(a,b)" (none of, or absent)."""
    for key, raw in selector.items():
        negated = raw.startswith("!")
        expression = raw[1:] if negated else raw
        if expression.startswith("in(") and expression.endswith(")"):
            values = {v.strip() for v in expression[3:-1].split(",") if v.strip()}
        else:
            values = {expression}
        if (labels.get(key) in values) == negated:
            return False
    return True


def fits(request: BundleRequest, available: Mapping[str, int], labels: Mapping[str, str]) -> bool:
    """Whether a node with `available` and `labels` can take `request` now."""
    return labels_match(request.label_selector, labels) and all(
        amount <= available.get(name, 0) for name, amount in request.resources.items()
    )


def score(request: BundleRequest, available: Mapping[str, int], labels: Mapping[str, str]) -> float:
    """Ray's least-resource score, or -1 when the node cannot take the request."""
    if not fits(request, available, labels):
        return -1.0
    total = 0.0
    for name, amount in request.resources.items():
        have = available.get(name, 0)
        if have > 0:
            total += (have - amount) / have
    return total


def scarcity_order(requests: Sequence[BundleRequest]) -> list[int]:
    """Indexes of `requests`, scarcest first (Ray's SortRequiredResources)."""
    extras = sorted({n for r in requests for n in r.resources if n not in PREDEFINED})

    def key(index: int) -> tuple[int, ...]:
        res = requests[index].resources
        return (
            res.get(GPU, 0),
            *(res.get(name, 0) for name in extras),
            res.get(OBJECT_STORE_MEMORY, 0),
            res.get(MEMORY, 0),
            res.get(CPU, 0),
        )

    return sorted(range(len(requests)), key=key, reverse=True)


# -- strategies ------------------------------------------------------------------------


class _Ledger:
    """Availability while one placement is worked out (the view is left untouched)."""

    def __init__(self, nodes: Mapping[bytes, NodeResources]) -> None:
        self.nodes = nodes
        self.available = {nid: dict(node.available) for nid, node in nodes.items()}

    def best(self, request: BundleRequest, candidates: Collection[bytes]) -> bytes | None:
        """The candidate with the highest score (>= 0); ties: the smallest id."""
        best_id, best_score = None, -1.0
        for node_id in sorted(candidates):
            value = score(request, self.available[node_id], self.nodes[node_id].labels)
            if value > best_score:
                best_id, best_score = node_id, value
        return best_id

    def fits(self, request: BundleRequest, node_id: bytes) -> bool:
        return fits(request, self.available[node_id], self.nodes[node_id].labels)

    def take(self, request: BundleRequest, node_id: bytes) -> None:
        left = self.available[node_id]
        for name, amount in request.resources.items():
            left[name] = left.get(name, 0) - amount


def _pack(requests: Sequence[BundleRequest], nodes: Mapping[bytes, NodeResources]) -> Placement:
    if not nodes:
        return Placement(Status.INFEASIBLE)
    ledger = _Ledger(nodes)
    candidates = set(nodes)
    chosen: dict[int, bytes] = {}
    remaining = scarcity_order(requests)
    while remaining:
        node_id = ledger.best(requests[remaining[0]], candidates)
        if node_id is None:
            return Placement(Status.FAILED)
        left = []
        for index in remaining:
            if index == remaining[0] or ledger.fits(requests[index], node_id):
                ledger.take(requests[index], node_id)
                chosen[index] = node_id
            else:
                left.append(index)
        remaining = left
        candidates.discard(node_id)
    return Placement(Status.SUCCESS, tuple(chosen[i] for i in range(len(requests))))


def _spread(requests: Sequence[BundleRequest], nodes: Mapping[bytes, NodeResources]) -> Placement:
    if not nodes:
        return Placement(Status.INFEASIBLE)
    ledger = _Ledger(nodes)
    unused, used = set(nodes), set[bytes]()
    chosen: dict[int, bytes] = {}
    for index in scarcity_order(requests):
        node_id = ledger.best(requests[index], unused) or ledger.best(requests[index], used)
        if node_id is None:
            return Placement(Status.FAILED)
        ledger.take(requests[index], node_id)
        unused.discard(node_id)
        used.add(node_id)
        chosen[index] = node_id
    return Placement(Status.SUCCESS, tuple(chosen[i] for i in range(len(requests))))


def _strict_pack(
    requests: Sequence[BundleRequest],
    nodes: Mapping[bytes, NodeResources],
    soft_target: bytes | None,
) -> Placement:
    if not nodes:
        return Placement(Status.INFEASIBLE)
    summed: dict[str, int] = {}
    selector: dict[str, str] = {}
    for request in requests:
        for name, amount in request.resources.items():
            summed[name] = summed.get(name, 0) + amount
        selector.update(request.label_selector)
    whole = BundleRequest(summed, selector)
    if not any(fits(whole, node.total, node.labels) for node in nodes.values()):
        return Placement(Status.INFEASIBLE)
    ledger = _Ledger(nodes)
    node_id = None
    if soft_target is not None and soft_target in nodes:
        node_id = ledger.best(whole, [soft_target])
    node_id = node_id or ledger.best(whole, nodes)
    if node_id is None:
        return Placement(Status.FAILED)
    return Placement(Status.SUCCESS, (node_id,) * len(requests))


def _strict_spread(
    requests: Sequence[BundleRequest], nodes: Mapping[bytes, NodeResources]
) -> Placement:
    if not nodes or len(requests) > len(nodes):
        return Placement(Status.INFEASIBLE)
    ledger = _Ledger(nodes)
    candidates = set(nodes)
    chosen: dict[int, bytes] = {}
    for index in scarcity_order(requests):
        node_id = ledger.best(requests[index], candidates)
        if node_id is None:
            return Placement(Status.FAILED)
        candidates.discard(node_id)
        chosen[index] = node_id
    return Placement(Status.SUCCESS, tuple(chosen[i] for i in range(len(requests))))
