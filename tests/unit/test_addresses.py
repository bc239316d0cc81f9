"""Addresses: what Ray really dials, and where `gcs-ha up` binds and announces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gcs_ha.addresses import as_ray_sees_it, join_address, ray_node_ip, split_address
from gcs_ha.up import MANIFEST, resolve_layout


@pytest.mark.parametrize(
    ("given", "dialed"),
    [
        ("127.0.0.1:6379", "10.1.2.3:6379"),
        ("localhost:6379", "10.1.2.3:6379"),
        ("LOCALHOST:7000", "10.1.2.3:7000"),
        ("[::1]:6379", "10.1.2.3:6379"),
        ("127.0.0.2:6379", "127.0.0.2:6379"),  # other loopback addresses are kept
        ("10.0.0.5:6379", "10.0.0.5:6379"),
        ("gcs.example:6379", "gcs.example:6379"),
    ],
)
def test_ray_rewrites_only_localhost(given: str, dialed: str) -> None:
    assert as_ray_sees_it(given, node_ip="10.1.2.3") == dialed


def test_the_node_ip_is_an_address() -> None:
    split_address(join_address(ray_node_ip(), 1))  # whatever this machine has
    assert join_address("fe80::1", 5) == "[fe80::1]:5"


def test_up_defaults_listen_everywhere_and_announce_the_node_ip(tmp_path: Path) -> None:
    layout = resolve_layout(tmp_path / "d", None, None, None, None)
    assert layout.host is None
    assert layout.gcs_address(1) == join_address(layout.node_ip, 6380)
    assert layout.listen_address(1) == "0.0.0.0:6380"
    assert layout.raft_address(1) == "127.0.0.1:7380"


def test_up_with_a_host_binds_and_announces_it(tmp_path: Path) -> None:
    layout = resolve_layout(tmp_path / "d", 3, 16000, None, None, host="127.0.0.2")
    assert layout.gcs_address(0) == "127.0.0.2:16000"
    assert layout.listen_address(0) is None
    assert layout.raft_address(2) == "127.0.0.2:17002"


def test_a_data_dir_of_the_previous_version_keeps_its_host(tmp_path: Path) -> None:
    """An up.json written before --host had a default of its own says 127.0.0.1."""
    data = tmp_path / "d"
    data.mkdir()
    record = {"replicas": 3, "port": 16100, "raft_port": 17100, "cluster_name": "gcs-ha"}
    (data / MANIFEST).write_text(json.dumps(record))
    layout = resolve_layout(data, None, None, None, None)
    assert layout.gcs_address(0) == "127.0.0.1:16100"
    assert layout.listen_address(0) is None
