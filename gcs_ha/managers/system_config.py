"""Ray's system config, applied to the managers' settings.

The head's system config (`gcs-ha ray-head -- --system-config='{...}'`, what Ray's GCS
gets as --config_list) is stored in the replicated KV; the KV manager hands it, parsed,
to config listeners when it starts leading and whenever the head stores it. A manager
that honours some of Ray's settings declares them as `Setting`s and calls
`apply_settings` from its listener.

A setting names the attribute it sets, a scale from Ray's unit to ours (ms -> s: 0.001;
1 keeps integers integers) and the smallest value that makes sense. A value that is not
a number (booleans included) or is below that minimum is ignored with a warning, so a
typo in the head's config never stops a leader.
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
