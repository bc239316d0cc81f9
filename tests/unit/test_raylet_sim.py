"""Pieces of the raylet simulator and of `gcs-ha bench scale` that need no GCS."""

from __future__ import annotations

import pytest

from gcs_ha.bench.scale import add_ratios, render_table
from gcs_ha.testing.raylet_sim.gcs import gcs_target, node_ip
from gcs_ha.testing.raylet_sim.main import parse
from gcs_ha.testing.raylet_sim.node import fits


def test_node_addresses_are_distinct_loopback_ips() -> None:
    ips = [node_ip("127.1", i) for i in range(1000)]
    assert len(set(ips)) == 1000
    assert ips[0] == "127.1.0.1" and ips[250] == "127.1.1.1"


def test_a_replica_list_becomes_one_pick_first_target() -> None:
    assert gcs_target("h:1") == "h:1"
    assert gcs_target("127.0.0.1:1, 127.0.0.1:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"


def test_fits_compares_with_tolerance() -> None:
    assert fits({"CPU": 0.3}, {"CPU": 0.1 + 0.2})
    assert not fits({"CPU": 1.0, "GPU": 1.0}, {"CPU": 4.0})


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SystemExit):
        parse(["--gcs", "h:1", "--nodes", "0"])


def test_ratios_are_against_ray_memory_at_the_same_node_count() -> None:
    rows = add_ratios([
        {"system": "ray-memory", "nodes": 50, "actors_per_s": 100.0, "kib_per_node": 10.0},
        {"system": "gcs-ha-3", "nodes": 50, "actors_per_s": 50.0, "kib_per_node": 5.0},
        {"system": "gcs-ha-3", "nodes": 100, "actors_per_s": 50.0, "error": "x"},
    ])  # fmt: skip
    assert rows[1]["vs_ray_memory"] == {"actors_per_s": 0.5, "kib_per_node": 0.5}
    assert "vs_ray_memory" not in rows[2]
    text = render_table(rows)
    assert text.splitlines()[0].split()[:2] == ["system", "nodes"]
    assert text.splitlines()[-1] == "gcs-ha-3 at 100 nodes: x"
