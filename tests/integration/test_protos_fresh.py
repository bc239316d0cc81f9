"""The committed generated code under gcs_ha/proto/ must be what protos/ compiles to today.

Regenerates every .proto with scripts/gen_protos.py --out into a temp dir and compares the trees
byte for byte, so a .proto edited without rerunning the generator (or a generated file left behind
after its .proto was deleted) fails here rather than at run time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "gcs_ha" / "proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generated_files(tree: Path) -> dict[str, bytes]:
    """Generated modules and stubs under `tree`, by path relative to it."""
    return {
        str(path.relative_to(tree)): path.read_bytes()
        for path in sorted(tree.rglob("*"))
        if path.is_file() and path.name.endswith(GENERATED_SUFFIXES)
    }


def regenerate(out: Path) -> Path:
    """Run the project's generator into `out`; return the fresh gcs_ha/proto tree."""
    script = ROOT / "scripts" / "gen_protos.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return out / "gcs_ha" / "proto"


def differences(fresh: dict[str, bytes], committed: dict[str, bytes]) -> list[str]:
    """Files that are missing, left over, or differ between the two trees."""
    names = set(fresh) | set(committed)
    return sorted(n for n in names if fresh.get(n) != committed.get(n))


@pytest.fixture(scope="module")
def fresh_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return regenerate(tmp_path_factory.mktemp("gen"))


def test_generated_code_is_fresh(fresh_tree: Path) -> None:
    fresh = generated_files(fresh_tree)
    assert fresh, "the generator produced nothing"
    stale = differences(fresh, generated_files(COMMITTED))
    assert stale == [], f"stale generated code, rerun scripts/gen_protos.py: {stale}"


def test_every_generated_package_is_importable(fresh_tree: Path) -> None:
    """Each directory holding generated modules also has the __init__.py that makes it a package."""
    for name in generated_files(fresh_tree):
        package = (COMMITTED / name).parent
        while package != COMMITTED.parent:
            assert (package / "__init__.py").is_file(), package
            package = package.parent


def test_comparison_notices_stale_missing_and_leftover_files(fresh_tree: Path) -> None:
    """The freshness check itself must fail on one changed byte, a missing or an extra file."""
    fresh = generated_files(fresh_tree)
    edited, removed = sorted(fresh)[:2]
    committed = dict(fresh)
    committed[edited] += b"\n"
    del committed[removed]
    committed["ray/gone_pb2.py"] = b""
    assert differences(fresh, committed) == sorted([edited, removed, "ray/gone_pb2.py"])
