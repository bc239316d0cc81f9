"""The bundle scheduling policy on synthetic resource views: each strategy feasible,
failed (not now) and infeasible (never, until a node is added)."""

from __future__ import annotations

import pytest

from gcs_ha.managers.placement_groups.bundle_policy import (
    BundleRequest,
    NodeResources,
    Placement,
    Status,
    fixed_map,
    fixed_subset,
    labels_match,
    place,
    scarcity_order,
)
from gcs_ha.proto.ray.common_pb2 import PACK, SPREAD, STRICT_PACK, STRICT_SPREAD, Bundle

A, B, C = b"A" * 28, b"B" * 28, b"C" * 28


def node(
    available: dict[str, float], total: dict[str, float] | None = None, **labels: str
) -> NodeResources:
    return NodeResources(fixed_map(available), fixed_map(total or available), labels)


def bundle(**resources: float) -> BundleRequest:
    return BundleRequest(fixed_map(resources))


def nodes_of(placement: Placement) -> list[bytes]:
    assert placement.status is Status.SUCCESS, placement
    return list(placement.nodes)


# -- PACK ------------------------------------------------------------------------------


def test_pack_puts_every_bundle_on_the_roomiest_node() -> None:
    view = {A: node({"CPU": 4}), B: node({"CPU": 2}), C: node({"CPU": 8})}
    assert nodes_of(place(PACK, [bundle(CPU=1)] * 4, view)) == [C] * 4


def test_pack_spills_the_rest_to_the_next_best_node() -> None:
    view = {A: node({"CPU": 2}), B: node({"CPU": 4})}
    assert nodes_of(place(PACK, [bundle(CPU=2)] * 3, view)) == [B, B, A]


def test_pack_fails_when_the_cluster_is_full_now() -> None:
    view = {A: node({"CPU": 1}, {"CPU": 4}), B: node({"CPU": 1}, {"CPU": 4})}
    assert place(PACK, [bundle(CPU=2)], view).status is Status.FAILED


def test_pack_without_nodes_is_infeasible() -> None:
    assert place(PACK, [bundle(CPU=1)], {}).status is Status.INFEASIBLE


def test_scarce_resources_are_placed_first() -> None:
    view = {A: node({"CPU": 2, "GPU": 1}), B: node({"CPU": 8})}
    requests = [bundle(CPU=1), bundle(CPU=1, GPU=1)]
    assert scarcity_order(requests) == [1, 0]
    assert nodes_of(place(PACK, requests, view)) == [A, A]


def test_fixed_point_sums_fit_exactly() -> None:
    view = {A: node({"CPU": 0.3})}
    assert nodes_of(place(PACK, [bundle(CPU=0.1), bundle(CPU=0.2)], view)) == [A, A]


# -- SPREAD ----------------------------------------------------------------------------


def test_spread_uses_a_new_node_for_each_bundle() -> None:
    view = {A: node({"CPU": 4}), B: node({"CPU": 4}), C: node({"CPU": 4})}
    assert sorted(nodes_of(place(SPREAD, [bundle(CPU=1)] * 3, view))) == [A, B, C]


def test_spread_falls_back_to_used_nodes() -> None:
    view = {A: node({"CPU": 6}), B: node({"CPU": 1})}
    chosen = nodes_of(place(SPREAD, [bundle(CPU=2)] * 3, view))
    assert chosen == [A, A, A]  # B never fits 2 CPU
    chosen = nodes_of(
        place(SPREAD, [bundle(CPU=1)] * 4, {A: node({"CPU": 2}), B: node({"CPU": 2})})
    )
    assert sorted(chosen) == [A, A, B, B]


def test_spread_fails_when_a_bundle_fits_nowhere() -> None:
    view = {A: node({"CPU": 1}), B: node({"CPU": 1})}
    assert place(SPREAD, [bundle(CPU=1)] * 3, view).status is Status.FAILED


# -- STRICT_PACK -----------------------------------------------------------------------


def test_strict_pack_needs_one_node_for_the_sum() -> None:
    view = {A: node({"CPU": 3}), B: node({"CPU": 4})}
    assert nodes_of(place(STRICT_PACK, [bundle(CPU=2)] * 2, view)) == [B, B]


def test_strict_pack_beyond_every_total_is_infeasible() -> None:
    view = {A: node({"CPU": 3}), B: node({"CPU": 3})}
    assert place(STRICT_PACK, [bundle(CPU=2)] * 2, view).status is Status.INFEASIBLE


def test_strict_pack_within_a_total_but_busy_fails() -> None:
    view = {A: node({"CPU": 1}, {"CPU": 8})}
    assert place(STRICT_PACK, [bundle(CPU=2)] * 2, view).status is Status.FAILED


def test_strict_pack_prefers_the_soft_target_when_it_fits() -> None:
    view = {A: node({"CPU": 4}), B: node({"CPU": 16})}
    assert nodes_of(place(STRICT_PACK, [bundle(CPU=2)], view, soft_target=A)) == [A]
    assert nodes_of(place(STRICT_PACK, [bundle(CPU=8)], view, soft_target=A)) == [B]


# -- STRICT_SPREAD ---------------------------------------------------------------------


def test_strict_spread_uses_distinct_nodes() -> None:
    view = {A: node({"CPU": 4}), B: node({"CPU": 4}), C: node({"CPU": 4})}
    assert sorted(nodes_of(place(STRICT_SPREAD, [bundle(CPU=1)] * 3, view))) == [A, B, C]


def test_strict_spread_with_more_bundles_than_nodes_is_infeasible() -> None:
    view = {A: node({"CPU": 8}), B: node({"CPU": 8})}
    assert place(STRICT_SPREAD, [bundle(CPU=1)] * 3, view).status is Status.INFEASIBLE


def test_strict_spread_avoids_nodes_the_group_already_uses() -> None:
    view = {A: node({"CPU": 8}), B: node({"CPU": 8})}
    assert nodes_of(place(STRICT_SPREAD, [bundle(CPU=1)], view, avoid={A})) == [B]
    assert place(STRICT_SPREAD, [bundle(CPU=1)] * 2, view, avoid={A}).status is Status.INFEASIBLE


def test_strict_spread_fails_when_a_node_is_busy() -> None:
    view = {A: node({"CPU": 4}), B: node({"CPU": 0}, {"CPU": 4})}
    assert place(STRICT_SPREAD, [bundle(CPU=1)] * 2, view).status is Status.FAILED


# -- labels, ties, input ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({"zone": "a"}, {"zone": "a"}, True),
        ({"zone": "a"}, {"zone": "b"}, False),
        ({"zone": "!a"}, {"zone": "b"}, True),
        ({"zone": "!a"}, {}, True),
        ({"zone": "in(a,b)"}, {"zone": "b"}, True),
        ({"zone": "in(a,b)"}, {}, False),
        ({"zone": "!in(a,b)"}, {"zone": "c"}, True),
        ({"zone": "!in(a,b)"}, {"zone": "a"}, False),
    ],
)
def test_label_selectors(selector: dict[str, str], labels: dict[str, str], expected: bool) -> None:
    assert labels_match(selector, labels) is expected


def test_a_label_selector_restricts_the_nodes() -> None:
    view = {A: node({"CPU": 8}, zone="a"), B: node({"CPU": 2}, zone="b")}
    request = BundleRequest(fixed_map({"CPU": 1}), {"zone": "b"})
    assert nodes_of(place(PACK, [request], view)) == [B]
    request = BundleRequest(fixed_map({"CPU": 1}), {"zone": "c"})
    assert place(PACK, [request], view).status is Status.FAILED


def test_ties_go_to_the_smallest_node_id() -> None:
    view = {C: node({"CPU": 4}), A: node({"CPU": 4}), B: node({"CPU": 4})}
    assert nodes_of(place(PACK, [bundle(CPU=1)], view)) == [A]


def test_requests_from_bundles_drop_zero_amounts() -> None:
    request = BundleRequest.of(
        Bundle(unit_resources={"CPU": 1.0, "GPU": 0.0}, label_selector={"k": "v"})
    )
    assert request.resources == {"CPU": 10_000}
    assert request.label_selector == {"k": "v"}
    view = {A: node({"CPU": 1}, k="v")}
    assert nodes_of(place(PACK, [request], view)) == [A]


def test_no_bundles_is_an_empty_success() -> None:
    assert place(STRICT_SPREAD, [], {}) == Placement(Status.SUCCESS)


def test_an_unknown_strategy_is_rejected() -> None:
    with pytest.raises(ValueError, match="strategy"):
        place(7, [bundle(CPU=1)], {A: node({"CPU": 1})})


def test_fixed_subset_looks_up_only_the_named_resources() -> None:
    view = {"CPU": 2.0, "GPU": 0.0, "CPU_group_abc": 1.0, "memory": 1e9}
    assert fixed_subset(view, {"CPU", "GPU", "custom"}) == {"CPU": 20_000}
    assert fixed_subset(view, set()) == {}
    assert fixed_subset(view, {"CPU", "memory"}) == {
        k: v for k, v in fixed_map(view).items() if k in ("CPU", "memory")
    }
