"""One actor as the manager sees it (Ray's GcsActor): its table record (`ActorTableData`),
its creation `TaskSpec`, and the lease it asks raylets for (`lease_spec`). Built by
`GcsActor.from_task_spec` (RegisterActor, CreateActor) or `GcsActor.from_tables` (a
leader's start). Pure: no I/O, no event loop. Details: actors/DESIGN.md, "Module notes".

Errors: InvalidRequestError from `from_task_spec` for a task that is not an actor
creation task or whose actor id is not 16 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gcs_ha.errors import InvalidRequestError
from gcs_ha.proto.ray.common_pb2 import (
    ACTOR_CREATION_TASK,
    LABEL_OPERATOR_IN,
    LABEL_OPERATOR_NOT_IN,
    ActorDiedErrorContext,
    Address,
    LabelSelector,
    LeaseSpec,
    TaskSpec,
)
from gcs_ha.proto.ray.gcs_pb2 import ActorTableData

ACTOR_ID_BYTES = 16
JOB_ID_BYTES = 4
NODE_ID_LABEL = "ray.io/node-id"  # the label a hard node affinity selects on

ActorState = ActorTableData.ActorState
DEPENDENCIES_UNREADY = ActorTableData.DEPENDENCIES_UNREADY
PENDING_CREATION = ActorTableData.PENDING_CREATION
ALIVE = ActorTableData.ALIVE
RESTARTING = ActorTableData.RESTARTING
DEAD = ActorTableData.DEAD


def state_name(state: int) -> str:
    return ActorTableData.ActorState.Name(state)


def is_restartable(data: ActorTableData) -> bool:
    """Whether a DEAD actor may come back for lineage reconstruction (Ray's
    IsActorRestartable): it went out of scope with restarts left."""
    if data.state != DEAD or data.death_cause.WhichOneof("context") != "actor_died_error_context":
        return False
    if data.death_cause.actor_died_error_context.reason != ActorDiedErrorContext.OUT_OF_SCOPE:
        return False
    effective = data.num_restarts - data.num_restarts_due_to_node_preemption
    return (
        data.max_restarts == -1
        or (data.max_restarts > 0 and data.preempted)
        or effective < data.max_restarts
    )


def label_selector_map(selector: LabelSelector) -> dict[str, str]:
    """A label selector as the string map ActorTableData shows (Ray's ToStringMap):
    `v`, `in(v1,v2)`, `!v`, `!in(v1,v2)`."""
    shown: dict[str, str] = {}
    for constraint in selector.label_constraints:
        values = sorted(constraint.label_values)
        body = values[0] if len(values) == 1 else f"in({','.join(values)})"
        if constraint.operator == LABEL_OPERATOR_NOT_IN:
            body = "!" + body
        shown[constraint.label_key] = body
    return shown


def hard_node_ids(selector: LabelSelector) -> list[bytes]:
    """The node ids a label selector pins the actor to (`ray.io/node-id in (...)`),
    sorted; empty when it pins none."""
    ids: set[bytes] = set()
    for constraint in selector.label_constraints:
        if constraint.label_key == NODE_ID_LABEL and constraint.operator == LABEL_OPERATOR_IN:
            for value in constraint.label_values:
                try:
                    ids.add(bytes.fromhex(value))
                except ValueError:
                    continue
    return sorted(ids)


@dataclass(eq=False)
class GcsActor:
    """An actor's record and creation task; see the module docstring.

    The creation task is kept serialized (`spec_bytes`) and parsed on first use of
    `spec` while the actor is scheduled; `compact()` drops the parsed copy once the
    actor runs. A parsed protobuf message costs about four times its serialized size
    in memory, and a live actor's creation task is read again only when it restarts."""

    data: ActorTableData
    spec_bytes: bytes
    grant_or_reject: bool = False  # the current target raylet may only grant or reject
    _spec: TaskSpec | None = field(default=None, repr=False)

    @property
    def spec(self) -> TaskSpec:
        """The creation task (parsed on first use; changes are kept until `compact`)."""
        if self._spec is None:
            self._spec = TaskSpec.FromString(self.spec_bytes)
        return self._spec

    def spec_snapshot(self) -> bytes:
        """The creation task serialized as it is now (what a write stores)."""
        if self._spec is None:
            return self.spec_bytes
        return self._spec.SerializeToString(deterministic=True)

    def compact(self) -> None:
        """Keep the creation task serialized only (the actor is not being scheduled)."""
        if self._spec is not None:
            self.spec_bytes = self._spec.SerializeToString(deterministic=True)
            self._spec = None

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_task_spec(cls, spec: TaskSpec) -> GcsActor:
        """A new actor, DEPENDENCIES_UNREADY, from its creation task."""
        check_creation_task(spec)
        creation = spec.actor_creation_task_spec
        data = ActorTableData(
            actor_id=creation.actor_id,
            job_id=spec.job_id,
            max_restarts=creation.max_actor_restarts,
            is_detached=creation.is_detached,
            name=creation.name,
            ray_namespace=creation.ray_namespace,
            state=DEPENDENCIES_UNREADY,
            serialized_runtime_env=spec.runtime_env_info.serialized_runtime_env,
            class_name=_class_name(spec),
        )
        data.function_descriptor.CopyFrom(spec.function_descriptor)
        data.owner_address.CopyFrom(spec.caller_address)
        data.address.SetInParent()  # Ray stores nil node and worker ids; empty reads the same
        strategy = spec.scheduling_strategy
        if strategy.WhichOneof("scheduling_strategy") == "placement_group_scheduling_strategy":
            pg_strategy = strategy.placement_group_scheduling_strategy
            data.placement_group_id = pg_strategy.placement_group_id
        data.required_resources.update(spec.required_resources)
        if spec.HasField("call_site") and spec.call_site:
            data.call_site = spec.call_site
        if spec.label_selector.label_constraints:
            data.label_selector.update(label_selector_map(spec.label_selector))
        data.labels.update(spec.labels)
        if spec.fallback_strategy.options:
            data.fallback_strategy.CopyFrom(spec.fallback_strategy)
        return cls(data=data, spec_bytes=spec.SerializeToString(deterministic=True))

    @classmethod
    def from_tables(cls, data: ActorTableData, spec: TaskSpec) -> GcsActor:
        """An actor loaded from the actor and actor task spec tables."""
        record = ActorTableData()
        record.CopyFrom(data)
        return cls(data=record, spec_bytes=spec.SerializeToString(deterministic=True))

    # -- identity ----------------------------------------------------------------------

    @property
    def actor_id(self) -> bytes:
        return bytes(self.data.actor_id)

    @property
    def job_id(self) -> bytes:
        return self.actor_id[-JOB_ID_BYTES:]

    @property
    def state(self) -> int:
        return int(self.data.state)

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def namespace(self) -> str:
        return self.data.ray_namespace

    @property
    def is_detached(self) -> bool:
        return self.data.is_detached

    @property
    def node_id(self) -> bytes:
        """The node the actor runs on or is being leased from (empty: none)."""
        return bytes(self.data.address.node_id)

    @property
    def worker_id(self) -> bytes:
        """The worker leased for the actor (empty: none yet)."""
        return bytes(self.data.address.worker_id)

    @property
    def owner_address(self) -> Address:
        return self.data.owner_address

    @property
    def owner_node_id(self) -> bytes:
        return bytes(self.data.owner_address.node_id)

    @property
    def owner_worker_id(self) -> bytes:
        return bytes(self.data.owner_address.worker_id)

    @property
    def root_detached_actor_id(self) -> bytes:
        return bytes(self.spec.root_detached_actor_id)

    # -- derived messages --------------------------------------------------------------

    def set_address(self, address: Address | None) -> None:
        """Where the actor is being leased or runs (None: nowhere yet)."""
        self.data.address.CopyFrom(address if address is not None else Address())

    def lease_spec(self, lease_id: bytes) -> LeaseSpec:
        """The LeaseSpec of RequestWorkerLease for the creation task (Ray's
        LeaseSpecification built from a TaskSpec)."""
        spec = self.spec
        creation = spec.actor_creation_task_spec
        lease = LeaseSpec(
            lease_id=lease_id,
            job_id=spec.job_id,
            type=spec.type,
            actor_id=creation.actor_id,
            is_detached_actor=creation.is_detached,
            root_detached_actor_id=spec.root_detached_actor_id,
            max_actor_restarts=creation.max_actor_restarts,
            depth=spec.depth,
            parent_task_id=spec.parent_task_id,
            language=spec.language,
            attempt_number=spec.attempt_number,
            task_name=spec.name,
        )
        lease.caller_address.CopyFrom(spec.caller_address)
        lease.required_resources.update(spec.required_resources)
        lease.required_placement_resources.update(spec.required_placement_resources)
        lease.scheduling_strategy.CopyFrom(spec.scheduling_strategy)
        lease.label_selector.CopyFrom(spec.label_selector)
        lease.fallback_strategy.CopyFrom(spec.fallback_strategy)
        lease.function_descriptor.CopyFrom(spec.function_descriptor)
        lease.runtime_env_info.CopyFrom(spec.runtime_env_info)
        lease.dynamic_worker_options.extend(creation.dynamic_worker_options)
        for arg in spec.args:
            if arg.HasField("object_ref") and not arg.is_inlined:
                lease.dependencies.append(arg.object_ref)
        return lease

    def placement_demand(self) -> dict[str, float]:
        """What the actor needs on a node to be placed there (placement resources, or
        the resources it holds while alive when none are given)."""
        demand = self.spec.required_placement_resources or self.spec.required_resources
        return {name: value for name, value in demand.items() if value > 0}

    def delta(self) -> ActorTableData:
        """The state-only record published after registration (Ray's
        GenActorDataOnlyWithStates)."""
        data = self.data
        delta = ActorTableData(
            state=data.state,
            num_restarts=data.num_restarts,
            num_restarts_due_to_node_preemption=data.num_restarts_due_to_node_preemption,
            max_restarts=data.max_restarts,
            timestamp=data.timestamp,
            pid=data.pid,
            start_time=data.start_time,
            end_time=data.end_time,
            repr_name=data.repr_name,
            preempted=data.preempted,
            ray_namespace=data.ray_namespace,
            name=data.name,
        )
        delta.death_cause.CopyFrom(data.death_cause)
        delta.address.CopyFrom(data.address)
        return delta

    def snapshot(self) -> ActorTableData:
        """A copy of the record (what a write stores, what a reply carries)."""
        copy = ActorTableData()
        copy.CopyFrom(self.data)
        return copy


def check_creation_task(spec: TaskSpec) -> bytes:
    """The actor id of an actor creation task; InvalidRequestError otherwise."""
    if spec.type != ACTOR_CREATION_TASK:
        raise InvalidRequestError("not an actor creation task")
    actor_id = bytes(spec.actor_creation_task_spec.actor_id)
    if len(actor_id) != ACTOR_ID_BYTES:
        raise InvalidRequestError(f"an actor id has {ACTOR_ID_BYTES} bytes, not {len(actor_id)}")
    return actor_id


def _class_name(spec: TaskSpec) -> str:
    descriptor = spec.function_descriptor
    kind = descriptor.WhichOneof("function_descriptor")
    if kind == "python_function_descriptor":
        return descriptor.python_function_descriptor.class_name
    if kind == "java_function_descriptor":
        return descriptor.java_function_descriptor.class_name
    return ""
