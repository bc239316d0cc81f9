"""The hand-off's setting (server/handoff.py); the hand-off itself runs on real replicas
in tests/integration/test_replica.py and tests/e2e/test_rolling_upgrade.py."""

from __future__ import annotations

import pytest

from gcs_ha.errors import ConfigError
from gcs_ha.server.handoff import HANDOFF_TIMEOUT_ENV, HANDOFF_TIMEOUT_S, handoff_timeout_s


def test_the_timeout_defaults_to_three_seconds_and_zero_turns_it_off() -> None:
    assert handoff_timeout_s({}) == HANDOFF_TIMEOUT_S == 3.0
    assert handoff_timeout_s({HANDOFF_TIMEOUT_ENV: " 0 "}) == 0.0
    assert handoff_timeout_s({HANDOFF_TIMEOUT_ENV: "1.5"}) == 1.5


@pytest.mark.parametrize("bad", ["-1", "soon", "nan"])
def test_a_bad_timeout_is_refused_by_name(bad: str) -> None:
    with pytest.raises(ConfigError, match=f"{HANDOFF_TIMEOUT_ENV}='{bad}'"):
        handoff_timeout_s({HANDOFF_TIMEOUT_ENV: bad})
