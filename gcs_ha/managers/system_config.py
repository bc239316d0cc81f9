"""Ray's system config, applied to the managers' settings: a manager declares the settings
it honours as `Setting`s and calls `apply_settings` from its config listener. A bad
value is ignored with a warning (DESIGN.md, "Module notes").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Setting:
    """Where one of Ray's settings goes."""

    attribute: str
    scale: float = 1
    minimum: float = 0


def apply_settings(
    target: object, config: Mapping[str, Any], settings: Mapping[str, Setting]
) -> None:
    """Set `target`'s attributes from the keys of `config` that `settings` names."""
    for key, setting in settings.items():
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < setting.minimum:
            log.warning("ignoring system config %s=%r", key, value)
            continue
        scaled = int(value) if setting.scale == 1 else value * setting.scale
        setattr(target, setting.attribute, scaled)
        log.info("system config %s=%r applied", key, value)
