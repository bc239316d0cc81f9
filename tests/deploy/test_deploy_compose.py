"""deploy/compose/compose.yaml, checked without an engine: against the Compose
Specification's JSON schema (check-jsonschema's copy, a dev dependency), by
`docker-compose config` (Compose v1 from Debian, installed by ./dev test: it resolves the
file and checks its references), and by the invariants below. Nothing is started."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_files import (
    COMPOSE,
    DOCKERFILE,
    build_args,
    dockerfile,
    exec_form,
    host_of,
    only,
    port_of,
    start_params,
    yaml_documents,
)

from gcs_ha.ray_head import check_ray_options

CLIENT_ALIAS = "gcs-ha"  # the network alias every replica answers to: Ray's one address


def compose() -> dict[str, Any]:
    [doc] = yaml_documents(COMPOSE)
    return doc


def command(service: dict[str, Any]) -> list[str]:
    return [str(part) for part in service["command"]]


def replicas(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run `gcs-ha start` (the image's entrypoint is gcs-ha)."""
    return {
        name: s
        for name, s in doc["services"].items()
        if "entrypoint" not in s and command(s)[0] == "start"
    }


def data_dir() -> str:
    [volume] = [v for i in only(dockerfile(), "VOLUME") for v in exec_form(i.args)]
    return volume


def test_matches_the_compose_specification_schema() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_docker_compose_config_accepts_it() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing: ./dev test installs it (Debian package)")
        pytest.skip("docker-compose (Debian's Compose v1) is missing: ./dev test installs it")
    proc = subprocess.run(
        [tool, "--project-directory", str(COMPOSE.parent), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_three_replicas_each_with_its_own_name_node_id_and_volume() -> None:
    doc = compose()
    reps = replicas(doc)
    assert len(reps) == 3
    params = {name: start_params(command(s)) for name, s in reps.items()}
    assert len({p["node_id"] for p in params.values()}) == 3
    sources = []
    for name, service in reps.items():
        assert params[name]["data_dir"].as_posix() == data_dir()
        mounts = [str(v).split(":") for v in service["volumes"]]
        [source] = [m[0] for m in mounts if m[1] == data_dir()]
        assert source in doc["volumes"], f"{source} is not a named volume"
        sources.append(source)
        assert service["hostname"] == name
    assert len(set(sources)) == 3, "two replicas share a volume"


def test_addresses_listen_everywhere_and_announce_the_service_name() -> None:
    for name, service in replicas(compose()).items():
        p = start_params(command(service))
        assert host_of(p["gcs_address"]) == name
        assert host_of(p["raft_address"]) == name
        assert p["listen"] == f"0.0.0.0:{port_of(p['gcs_address'])}"
        assert host_of(p["http_address"]) == "0.0.0.0"


def test_peers_are_the_same_on_every_replica_and_name_each_raft_address() -> None:
    params = [start_params(command(s)) for s in replicas(compose()).values()]
    raft_addresses = {p["raft_address"] for p in params}
    for p in params:
        assert set(p["peers"]) == raft_addresses, p
    assert len({p["cluster_name"] for p in params}) == 1


def test_the_secret_is_a_compose_secret_not_an_environment_variable() -> None:
    doc = compose()
    for name, service in doc["services"].items():
        env = service.get("environment", {})
        names = env.keys() if isinstance(env, dict) else [e.split("=")[0] for e in env]
        assert "GCS_HA_SECRET" not in names, name
    for service in replicas(doc).values():
        p = start_params(command(service))
        [secret] = service["secrets"]
        assert str(p["secret_file"]) == f"/run/secrets/{secret}"
        assert "file" in doc["secrets"][secret]


def test_ports_healthchecks_and_one_address_for_ray() -> None:
    doc = compose()
    reps = replicas(doc)
    grpc_ports = set()
    for service in reps.values():
        p = start_params(command(service))
        grpc_ports.add(port_of(p["gcs_address"]))
        assert CLIENT_ALIAS in service["networks"]["default"]["aliases"]
        check = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1:{port_of(p['http_address'])}/readyz" in check
    assert len(grpc_ports) == 1
    ray_address = f"{CLIENT_ALIAS}:{grpc_ports.pop()}"

    head = doc["services"]["ray-head"]
    args = command(head)
    assert args[0] == "ray-head" and f"--address={ray_address}" in args
    check_ray_options(args[args.index("--") + 1 :])  # refuses --port, --address, --head
    assert set(head["depends_on"]) == set(reps)
    assert all(d["condition"] == "service_healthy" for d in head["depends_on"].values())

    worker = doc["services"]["ray-worker"]
    assert worker["entrypoint"] == ["ray"]
    assert command(worker)[:2] == ["start", f"--address={ray_address}"]
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"


def test_every_service_uses_the_image_of_the_dockerfile() -> None:
    doc = compose()
    ours = {name: s for name, s in doc["services"].items() if name != "prometheus"}
    images = {s["image"] for s in ours.values()}
    assert len(images) == 1
    builds = [s["build"] for s in ours.values() if "build" in s]
    assert builds and all(b["dockerfile"] == DOCKERFILE.name for b in builds)
    assert (COMPOSE.parent / builds[0]["context"]).resolve() == DOCKERFILE.parent
    assert build_args(dockerfile())["RAY_VERSION"] == "2.60.0"


def test_prometheus_scrapes_every_replica_with_the_alert_rules() -> None:
    doc = compose()
    prometheus = doc["services"]["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    config_path = COMPOSE.parent / mounts["/etc/prometheus/prometheus.yml"]
    rules = COMPOSE.parent / mounts["/etc/prometheus/gcs-ha-alerts.yml"]
    assert rules.resolve() == (COMPOSE.parents[1] / "prometheus" / "gcs-ha-alerts.yml").resolve()
    config = yaml.safe_load(config_path.read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "gcs-ha"  # the job the alert rules select
    expected = [
        f"{name}:{port_of(start_params(command(service))['http_address'])}"
        for name, service in sorted(replicas(doc).items())
    ]
    assert job["static_configs"][0]["targets"] == expected
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: ./dev test installs it (Debian's prometheus)"
    with tempfile.TemporaryDirectory() as tmp:  # promtool resolves rule_files beside it
        shutil.copy(config_path, Path(tmp) / "prometheus.yml")
        shutil.copy(rules, Path(tmp) / "gcs-ha-alerts.yml")
        done = subprocess.run(
            [promtool, "check", "config", str(Path(tmp) / "prometheus.yml")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
