"""The Ray GCS, assembled: every manager built once, wired to the others, registered with
the GcsServer in dependency order, and every Ray service mounted on the replica's port.

This is the one place that knows how the managers depend on each other (as Ray's
GcsServer::DoStart does). Managers start in the order they are added here and stop in
reverse; listeners wire node deaths, job ends and worker deaths across managers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc.aio

from gcs_ha.managers.actors.manager import ActorDeps, ActorManager
from gcs_ha.managers.autoscaler_state_manager import AutoscalerStateManager
from gcs_ha.managers.event_export_manager import EventExportManager
from gcs_ha.managers.function_manager import FunctionManager
from gcs_ha.managers.health_check_manager import HealthCheckManager
from gcs_ha.managers.job_manager import JobManager
from gcs_ha.managers.kv_manager import KvManager
from gcs_ha.managers.node_manager import NodeManager
from gcs_ha.managers.placement_groups.manager import PlacementGroupManager
from gcs_ha.managers.placement_groups.scheduler import PlacementGroupScheduler
from gcs_ha.managers.pubsub_manager import PubsubManager
from gcs_ha.managers.resource_manager import ResourceManager
from gcs_ha.managers.runtime_env_manager import RuntimeEnvManager
from gcs_ha.managers.syncer_hub import SyncerHub
from gcs_ha.managers.task_manager import TaskManager
from gcs_ha.managers.worker_manager import WorkerManager
from gcs_ha.proto.ray import gcs_pb2, gcs_service_pb2_grpc
from gcs_ha.server.clients.core_workers import CoreWorkerDriverProbe, GrpcCoreWorkerClientPool
from gcs_ha.server.clients.raylets import GrpcRayletClientPool
from gcs_ha.server.gcs_server import GcsServer
from gcs_ha.server.services import (
    actor_service,
    autoscaler_service,
    event_export_service,
    job_service,
    node_service,
    placement_group_service,
    pubsub_service,
    resource_service,
    runtime_env_service,
    syncer_service,
    task_service,
    worker_service,
)
from gcs_ha.server.services.kv_service import InternalKvService
from gcs_ha.storage.internal_kv import InternalKv
from gcs_ha.storage.store_client import StoreClient


@dataclass(frozen=True)
class RayGcs:
    """Every manager of one replica's Ray GCS (built once, started on each promotion)."""

    pool: GrpcRayletClientPool
    core_workers: GrpcCoreWorkerClientPool
    kv: KvManager
    pubsub: PubsubManager
    health: HealthCheckManager
    nodes: NodeManager
    resources: ResourceManager
    syncer: SyncerHub
    functions: FunctionManager
    runtime_envs: RuntimeEnvManager
    tasks: TaskManager
    jobs: JobManager
    placement_groups: PlacementGroupManager
    workers: WorkerManager
    actors: ActorManager
    events: EventExportManager
    autoscaler: AutoscalerStateManager


def build(gcs: GcsServer, store: StoreClient) -> RayGcs:
    """Build and wire the managers; register them with `gcs` in dependency order.
    `store` is the replica's store with read barriers (the KV service reads through it);
    the other managers read `gcs.tables` (local, after the promotion barrier)."""
    tables = gcs.tables
    pool = GrpcRayletClientPool(
        cluster_id_hex=lambda: gcs.cluster_id.hex, auth=gcs.ray_auth, tls=gcs.ray_tls
    )
    pubsub = PubsubManager(tables.subscriber_table)
    health = HealthCheckManager(pool)
    nodes = NodeManager(tables, pubsub, pool, health)
    resources = ResourceManager(pool)
    functions = FunctionManager(tables.internal_kv)
    runtime_envs = RuntimeEnvManager(tables.internal_kv)
    tasks = TaskManager()
    probe = CoreWorkerDriverProbe(gcs.ray_auth, gcs.ray_tls)
    jobs = JobManager(tables, pubsub, functions, runtime_envs, driver_probe=probe)
    placement_groups = PlacementGroupManager(
        tables,
        PlacementGroupScheduler(resources, pool),
        resources,
        namespace_of=lambda job_id: _ray_namespace(jobs, job_id),
    )
    core_workers = GrpcCoreWorkerClientPool(
        cluster_id_hex=lambda: gcs.cluster_id.hex, auth=gcs.ray_auth, tls=gcs.ray_tls
    )
    actors = ActorManager(
        ActorDeps(tables, pubsub, nodes, resources, pool, core_workers, functions, runtime_envs)
    )
    kv = KvManager(InternalKv(store))
    ray = RayGcs(
        pool=pool,
        core_workers=core_workers,
        kv=kv,
        pubsub=pubsub,
        health=health,
        nodes=nodes,
        resources=resources,
        syncer=SyncerHub(receiver=resources, heartbeat=health.mark_healthy),
        functions=functions,
        runtime_envs=runtime_envs,
        tasks=tasks,
        jobs=jobs,
        placement_groups=placement_groups,
        workers=WorkerManager(tables, pubsub),
        actors=actors,
        events=EventExportManager(tasks),
        autoscaler=AutoscalerStateManager(
            resources,
            tables.internal_kv,
            pool,
            bundles_on_node=placement_groups.placement_groups_on_node,
            on_drain_requested=actors.set_preempted_and_publish,
            on_drain_accepted=nodes.set_node_draining,
        ),
    )
    for manager in (
        ray.pool, ray.core_workers, ray.kv, ray.pubsub, ray.health, ray.nodes, ray.resources,
        ray.syncer,
        ray.functions, ray.runtime_envs, ray.tasks, ray.jobs, ray.placement_groups,
        ray.workers, ray.actors, ray.events,
        ray.autoscaler,
    ):  # fmt: skip
        gcs.add_manager(manager)
    for listener in (ray.health, ray.nodes, ray.resources, ray.workers, ray.actors):
        ray.kv.add_config_listener(listener.apply_system_config)
    _wire(gcs, ray)
    return ray


def _wire(gcs: GcsServer, ray: RayGcs) -> None:
    """Cross-manager events, as Ray's GcsServer installs them."""
    ray.nodes.add_node_added_listener(ray.resources.on_node_added)
    ray.resources.add_view_listener(ray.nodes.update_alive_node)
    ray.nodes.add_node_removed_listener(ray.resources.on_node_dead)
    ray.nodes.add_node_removed_listener(lambda node: ray.syncer.on_node_dead(node.node_id))
    ray.nodes.add_node_removed_listener(lambda node: ray.jobs.on_node_removed(node.node_id))
    ray.nodes.add_node_removed_listener(_drop_subscribers(ray.pubsub))
    ray.jobs.add_job_finished_listener(ray.tasks.on_job_finished)
    ray.nodes.add_node_added_listener(ray.placement_groups.on_node_added)
    ray.nodes.add_node_removed_listener(ray.placement_groups.on_node_removed)
    ray.nodes.set_in_use_providers(bundles=ray.placement_groups.bundles_in_use)
    ray.jobs.add_job_finished_listener(ray.placement_groups.on_job_finished)
    ray.workers.add_worker_dead_listener(ray.tasks.on_worker_dead)
    ray.workers.add_worker_dead_listener(
        lambda w: ray.pubsub.remove_subscribers_of(w.worker_address.worker_id)
    )
    _wire_actors(ray)
    gcs.add_after_serving(ray.nodes.on_leader_started)
    gcs.add_after_serving(ray.jobs.collect_garbage)


def _wire_actors(ray: RayGcs) -> None:
    """The actor manager's events (Ray's InstallEventListeners): new nodes schedule
    pending actors, dead nodes and workers restart or bury theirs (and drop their
    core-worker channels), leader start spares the actor workers in use."""
    ray.nodes.set_in_use_providers(workers=ray.actors.workers_in_use)
    ray.nodes.add_node_added_listener(ray.actors.on_node_added)
    ray.nodes.add_node_removed_listener(ray.actors.on_node_dead)
    ray.nodes.add_node_removed_listener(lambda n: ray.core_workers.disconnect_node(n.node_id))
    ray.workers.add_worker_dead_listener(ray.actors.on_worker_dead)
    ray.workers.add_worker_dead_listener(
        lambda w: ray.core_workers.disconnect(w.worker_address.worker_id)
    )
    ray.actors.set_placement_group_cleaner(ray.placement_groups.on_actor_dead)


def _ray_namespace(jobs: JobManager, job_id: bytes) -> str:
    """The Ray namespace of a job (its driver's JobConfig), "" for an unknown job."""
    job = jobs.get_job(job_id)
    return "" if job is None else job.config.ray_namespace


def _drop_subscribers(pubsub: PubsubManager) -> Callable[[gcs_pb2.GcsNodeInfo], None]:
    def drop(node: gcs_pb2.GcsNodeInfo) -> None:
        pubsub.remove_subscribers_of(node.node_id)

    return drop


def mount(server: grpc.aio.Server, gcs: GcsServer, ray: RayGcs) -> None:
    """Serve every Ray GCS service of `ray` on `server`."""
    kv = InternalKvService(ray.kv)
    gcs_service_pb2_grpc.add_InternalKVGcsServiceServicer_to_server(kv, server)  # type: ignore[no-untyped-call]
    node_service.mount(server, node_service.NodeInfoDeps(ray.nodes, gcs.cluster_id))
    pubsub_service.mount(server, ray.pubsub)
    resource_service.mount(server, ray.resources)
    syncer_service.mount(server, ray.syncer)
    autoscaler_service.mount(server, ray.autoscaler)
    job_service.mount(server, ray.jobs)
    placement_group_service.mount(server, ray.placement_groups)
    actor_service.mount(server, ray.actors)
    worker_service.mount(server, ray.workers)
    task_service.mount(server, ray.tasks)
    runtime_env_service.mount(server, ray.runtime_envs)
    event_export_service.mount(server, ray.events)
