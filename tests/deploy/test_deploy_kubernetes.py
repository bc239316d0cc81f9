"""deploy/kubernetes/*.yaml, checked offline: every object against Kubernetes' own
schemas (kubernetes-validate, a dev dependency that bundles them; strict: unknown fields
are errors), and the invariants a gcs-ha cluster needs. Each replica's arguments are
expanded as the kubelet expands them ($(VAR) from the container's environment, the pod
name and namespace from the downward API) and parsed by gcs-ha's own `start` command.
Nothing here talks to a cluster."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from deploy_files import (
    by_kind,
    container_env,
    dockerfile,
    exec_form,
    expand,
    host_of,
    kubernetes_objects,
    only,
    port_of,
    start_params,
)

from gcs_ha.server.gcs_server import HEALTH_FORWARDING

NAMESPACE = "ray-prod"  # any namespace: the manifests take it from the downward API
OLDEST = "1.29"  # the oldest Kubernetes the docs promise (gRPC probes are GA from 1.27)


def statefulset() -> dict[str, Any]:
    [sts] = by_kind(kubernetes_objects(), "StatefulSet")
    return sts


def service(name: str) -> dict[str, Any]:
    [svc] = [s for s in by_kind(kubernetes_objects(), "Service") if s["metadata"]["name"] == name]
    return svc


def container() -> dict[str, Any]:
    [c] = statefulset()["spec"]["template"]["spec"]["containers"]
    return c


def replica_params(ordinal: int) -> dict[str, Any]:
    """`gcs-ha start` options of pod gcs-ha-<ordinal>, as the kubelet would run it."""
    pod = f"{statefulset()['metadata']['name']}-{ordinal}"
    fields = {"metadata.name": pod, "metadata.namespace": NAMESPACE}
    env = container_env(container(), fields)
    args = [expand(a, env) for a in container()["args"]]
    assert not [a for a in args if "$(" in a], "a reference the kubelet cannot expand"
    return start_params(args)


def all_params() -> list[dict[str, Any]]:
    return [replica_params(i) for i in range(statefulset()["spec"]["replicas"])]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pod_labels() -> dict[str, str]:
    labels: dict[str, str] = statefulset()["spec"]["template"]["metadata"]["labels"]
    return labels


def container_port(name_or_number: str | int) -> int:
    for port in container()["ports"]:
        if name_or_number in (port["name"], port["containerPort"]):
            return int(port["containerPort"])
    raise AssertionError(f"no container port {name_or_number}")


@pytest.mark.parametrize("version", [OLDEST, kubernetes_validate.utils.latest_version()])
def test_every_object_matches_the_kubernetes_schema(version: str) -> None:
    objects = kubernetes_objects()
    assert {o["kind"] for o in objects} == {"StatefulSet", "Service", "PodDisruptionBudget"}
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_schema_validation_rejects_an_unknown_field() -> None:
    """The validator is not vacuous: a misspelt field fails."""
    sts = statefulset()
    sts["spec"]["podManagmentPolicy"] = "Parallel"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, OLDEST, strict=True)


def test_statefulset_three_replicas_started_together_with_stable_identity() -> None:
    sts = statefulset()
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert selects(sts["spec"]["selector"]["matchLabels"], pod_labels())
    node_ids = [p["node_id"] for p in all_params()]
    assert node_ids == ["gcs-ha-0", "gcs-ha-1", "gcs-ha-2"]  # the pod names


def test_each_replica_has_its_own_volume_at_the_images_data_dir() -> None:
    [volume] = [v for i in only(dockerfile(), "VOLUME") for v in exec_form(i.args)]
    [claim] = statefulset()["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    [mount] = [m for m in container()["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    assert mount["mountPath"] == volume
    assert all(p["data_dir"].as_posix() == volume for p in all_params())


def test_raft_and_grpc_addresses_are_the_pods_stable_dns_names() -> None:
    sts = statefulset()
    domain = container_env(container(), {"metadata.name": "", "metadata.namespace": ""})
    for i, p in enumerate(all_params()):
        stable = f"gcs-ha-{i}.{sts['spec']['serviceName']}.{NAMESPACE}.svc"
        stable += f".{domain['CLUSTER_DOMAIN']}"
        assert host_of(p["raft_address"]) == stable
        assert host_of(p["gcs_address"]) == stable
        assert p["listen"] == f"0.0.0.0:{port_of(p['gcs_address'])}"
        assert port_of(p["gcs_address"]) == container_port("grpc")
        assert port_of(p["raft_address"]) == container_port("raft")
        assert p["http_address"] == f"0.0.0.0:{container_port('http')}"


def test_every_replica_names_every_raft_address_the_same_way() -> None:
    params = all_params()
    raft_addresses = {p["raft_address"] for p in params}
    assert len(raft_addresses) == 3
    for p in params:
        assert set(p["peers"]) == raft_addresses
    assert len({p["cluster_name"] for p in params}) == 1


def test_headless_peer_service_publishes_not_ready_addresses() -> None:
    svc = service(statefulset()["spec"]["serviceName"])
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert selects(svc["spec"]["selector"], pod_labels())
    assert {p["targetPort"] for p in svc["spec"]["ports"]} >= {"raft", "grpc"}


def test_client_service_reaches_the_grpc_port_of_ready_replicas() -> None:
    svc = service("gcs-ha")
    assert svc["spec"].get("clusterIP") != "None"
    assert not svc["spec"].get("publishNotReadyAddresses", False)
    assert selects(svc["spec"]["selector"], pod_labels())
    [port] = svc["spec"]["ports"]
    assert container_port(port["targetPort"]) == port_of(all_params()[0]["gcs_address"])


def test_probes_readiness_on_forwarding_liveness_on_livez() -> None:
    c = container()
    grpc_probe = c["readinessProbe"]["grpc"]
    assert grpc_probe["service"] == HEALTH_FORWARDING
    assert container_port(grpc_probe["port"]) == container_port("grpc")
    for probe in ("livenessProbe", "startupProbe"):
        http = c[probe]["httpGet"]
        assert http["path"] == "/livez"
        assert container_port(http["port"]) == container_port("http")


def test_disruption_budget_of_one() -> None:
    [pdb] = by_kind(kubernetes_objects(), "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels())


def test_the_secret_is_a_mounted_kubernetes_secret_not_an_environment_variable() -> None:
    c = container()
    for var in c.get("env", []):
        assert var["name"] != "GCS_HA_SECRET"
        assert "secretKeyRef" not in var.get("valueFrom", {})
    [volume] = [v for v in statefulset()["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    [mount] = [m for m in c["volumeMounts"] if m["name"] == volume["name"]]
    assert mount.get("readOnly") is True
    [item] = volume["secret"]["items"]
    for p in all_params():
        assert p["secret_file"].as_posix() == f"{mount['mountPath']}/{item['path']}"


def test_runs_as_the_images_non_root_user_and_is_scraped() -> None:
    spec = statefulset()["spec"]["template"]["spec"]
    [user] = only(dockerfile(), "USER")
    uid = int(user.args.split(":")[0])
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == uid
    assert spec["securityContext"]["fsGroup"]  # the volume and the secret readable by it
    notes = statefulset()["spec"]["template"]["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true"
    assert int(notes["prometheus.io/port"]) == container_port("http")
