"""Ray's system config applied to the managers' settings (gcs_ha/managers/system_config.py)."""

from __future__ import annotations

import logging

import pytest

from gcs_ha.managers.actors.manager import SETTINGS as ACTOR_SETTINGS
from gcs_ha.managers.actors.registry import ActorRegistry
from gcs_ha.managers.node_manager import SETTINGS as NODE_SETTINGS
from gcs_ha.managers.resource_manager import ResourceManager
from gcs_ha.managers.system_config import Setting, apply_settings
from gcs_ha.managers.worker_manager import SETTINGS as WORKER_SETTINGS


class Target:
    period_s = 1.0
    count = 10


SETTINGS = {
    "period_ms": Setting("period_s", 0.001, minimum=1),
    "count": Setting("count"),
}


def test_values_are_scaled_checked_and_missing_ones_kept(caplog: pytest.LogCaptureFixture) -> None:
    target = Target()
    apply_settings(target, {"period_ms": 250, "other": 3}, SETTINGS)
    assert (target.period_s, target.count) == (0.25, 10)
    apply_settings(target, {"count": 7.0}, SETTINGS)
    assert target.count == 7 and isinstance(target.count, int)
    caplog.set_level(logging.WARNING)
    for bad in ({"period_ms": 0}, {"count": -1}, {"count": True}, {"period_ms": "100"}):
        apply_settings(target, bad, SETTINGS)
    assert (target.period_s, target.count) == (0.25, 7)
    assert len([r for r in caplog.records if "ignoring system config" in r.message]) == 4


def test_managers_take_rays_settings() -> None:
    resources = ResourceManager()
    resources.apply_system_config(
        {
            "gcs_pull_resource_loads_period_milliseconds": 500,
            "maximum_gcs_dead_node_cached_count": 3,
        }
    )
    assert (resources._pull_period_s, resources._max_dead) == (0.5, 3)
    registry = ActorRegistry()
    apply_settings(registry, {"maximum_gcs_destroyed_actor_cached_count": 12}, ACTOR_SETTINGS)
    assert registry.max_destroyed == 12
    assert set(NODE_SETTINGS) == {"maximum_gcs_dead_node_cached_count"}
    assert set(WORKER_SETTINGS) == {"maximum_gcs_dead_worker_cached_count"}
