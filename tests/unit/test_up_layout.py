"""`gcs-ha up`'s port layout: gRPC P+i, Raft R+i, HTTP R+(R-P)+i, checked together."""

from __future__ import annotations

from pathlib import Path

import pytest

from gcs_ha.errors import ConfigError
from gcs_ha.up import resolve_layout


def test_the_http_listeners_follow_the_raft_ports(tmp_path: Path) -> None:
    layout = resolve_layout(tmp_path / "d", 3, 6379, None, None)
    assert [layout.http_address(i).rpartition(":")[2] for i in range(3)] == [
        "8379", "8380", "8381"
    ]  # fmt: skip


def test_http_ports_below_1_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HTTP ports"):
        resolve_layout(tmp_path / "d", 3, 3000, 1000, None)
