"""deploy/kubernetes/kuberay/raycluster.yaml, the KubeRay sample, checked offline.

The RayCluster CRD's schema is not bundled with kubernetes-validate (nor kept here), so
the RayCluster itself is checked by these invariants only; its pod templates are core
Kubernetes PodSpecs and are checked against Kubernetes' schema (strict) as Pods. What
KubeRay does with the sample (which command it runs, which init container it would
inject) is from KubeRay's source, described in docs/kubernetes.md; no operator runs here.
"""

from __future__ import annotations

import shlex
from typing import Any

import kubernetes_validate
from deploy_files import (
    RAYCLUSTER,
    build_args,
    by_kind,
    container_env,
    dockerfile,
    expand,
    kubernetes_objects,
    yaml_documents,
)

from gcs_ha.ray_head import check_ray_options

NAMESPACE = "ray-prod"
OVERWRITE = "ray.io/overwrite-container-cmd"
KUBERAY_INIT = "wait-gcs-ready"  # the init container KubeRay injects, when it does


def raycluster() -> dict[str, Any]:
    [rc] = yaml_documents(RAYCLUSTER)
    return rc


def head_pod() -> dict[str, Any]:
    spec: dict[str, Any] = raycluster()["spec"]["headGroupSpec"]["template"]["spec"]
    return spec


def worker_pod() -> dict[str, Any]:
    [group] = raycluster()["spec"]["workerGroupSpecs"]
    spec: dict[str, Any] = group["template"]["spec"]
    return spec


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return container_env(container, {"metadata.name": "pod", "metadata.namespace": NAMESPACE})


def command_of(container: dict[str, Any]) -> list[str]:
    env = env_of(container)
    return [expand(part, env) for part in container["command"] + container.get("args", [])]


def gcs_ha_service_address() -> str:
    """gcs-ha's client Service (deploy/kubernetes/services.yaml) as Ray must dial it."""
    [svc] = [s for s in by_kind(kubernetes_objects(), "Service") if "clusterIP" not in s["spec"]]
    [sts] = by_kind(kubernetes_objects(), "StatefulSet")
    [replica] = sts["spec"]["template"]["spec"]["containers"]
    domain = env_of(replica)["CLUSTER_DOMAIN"]
    [port] = svc["spec"]["ports"]
    return f"{svc['metadata']['name']}.{NAMESPACE}.svc.{domain}:{port['port']}"


def test_a_ray_io_v1_raycluster_whose_commands_kuberay_leaves_alone() -> None:
    rc = raycluster()
    assert (rc["apiVersion"], rc["kind"]) == ("ray.io/v1", "RayCluster")
    assert rc["metadata"]["annotations"][OVERWRITE] == "true"
    assert rc["spec"]["rayVersion"] == build_args(dockerfile())["RAY_VERSION"]


def test_no_gcs_fault_tolerance_of_kuberay_and_no_redis() -> None:
    rc = raycluster()
    assert "gcsFaultToleranceOptions" not in rc["spec"]
    assert "ray.io/ft-enabled" not in rc["metadata"].get("annotations", {})
    for pod in (head_pod(), worker_pod()):
        for c in pod["containers"]:
            assert not {"RAY_REDIS_ADDRESS", "REDIS_PASSWORD"} & set(env_of(c))


def test_the_head_runs_gcs_ha_ray_head_on_the_gcs_ha_service() -> None:
    [head] = head_pod()["containers"]
    cmd = command_of(head)
    assert cmd[:2] == ["gcs-ha", "ray-head"]
    assert f"--address={gcs_ha_service_address()}" in cmd[: cmd.index("--")]
    ray_args = cmd[cmd.index("--") + 1 :]
    check_ray_options(ray_args)  # gcs-ha's own check: no --port, --address or --head
    assert "--block" in ray_args  # the container lives as long as the head


def test_workers_start_on_the_gcs_ha_service() -> None:
    [worker] = worker_pod()["containers"]
    cmd = command_of(worker)
    assert cmd[:3] == ["ray", "start", f"--address={gcs_ha_service_address()}"]
    assert "--block" in cmd


def test_workers_wait_for_gcs_ha_not_for_the_head_service() -> None:
    init = worker_pod()["initContainers"]
    assert KUBERAY_INIT not in [c["name"] for c in init]
    [wait] = init
    assert env_of(wait)["RAY_ADDRESS"] == gcs_ha_service_address()
    script = wait["args"][0]
    assert 'ray health-check --address "$RAY_ADDRESS"' in script
    shlex.split(script.replace("\n", " ; "))  # balanced quotes


def test_ray_address_and_reconnect_timeout_in_every_ray_container() -> None:
    for pod in (head_pod(), worker_pod()):
        for c in pod["containers"]:
            env = env_of(c)
            assert env["RAY_ADDRESS"] == gcs_ha_service_address()
            assert int(env["RAY_gcs_rpc_server_reconnect_timeout_s"]) >= 60


def test_ray_pods_use_the_gcs_ha_image_as_non_root() -> None:
    [sts] = by_kind(kubernetes_objects(), "StatefulSet")
    [replica] = sts["spec"]["template"]["spec"]["containers"]
    for pod in (head_pod(), worker_pod()):
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"] + pod.get("initContainers", []):
            assert c["image"] == replica["image"]


def test_pod_templates_match_the_kubernetes_pod_schema() -> None:
    version = kubernetes_validate.utils.latest_version()
    for name, spec in (("head", head_pod()), ("worker", worker_pod())):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
        kubernetes_validate.validate(pod, version, strict=True)
