"""The release suite: tests marked `release` run only with `--release`.

`./dev test` (and CI) runs everything else; before each release, `./dev test --release`
runs the whole suite, the release tests included (today: Ray's own GCS fault-tolerance
tests ported to gcs-ha, tests/ray_conformance, about 2 minutes; backup/restore and lost
quorum with real Ray, tests/e2e/test_real_ray_recovery.py, about 1 minute), and `./dev
test --release tests/ray_conformance` runs them alone.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--release", action="store_true", help="also run the release suite (marked release)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--release"):
        return
    skip = pytest.mark.skip(reason="release suite: run with --release")
    for item in items:
        if "release" in item.keywords:
            item.add_marker(skip)
