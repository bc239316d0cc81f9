"""Our ray.rpc protos (protos/gcs_ha/proto/ray/) must match the ray==2.60.0 wheel's schema.

Ray's binaries decode what we send with their own schema, so every message, field and enum value
we declare must carry Ray's full name, number, type and cardinality, and every service and method
Ray's name, request/reply types and streaming flags (gRPC routes calls by /service/method and
decodes bodies by those types). Both schemas are handled as
FileDescriptorSet protos, never loaded into one descriptor pool: ours and Ray's declare the same
full names (ray.rpc.Address, ...) in different files, which a single pool rejects.

- Ours: compiled from the .proto sources with grpc_tools.protoc (--descriptor_set_out).
- Ray's: dumped by a subprocess that imports only ray.core.generated.*_pb2. The ray.rpc.syncer
  file is not shipped as Python; its serialized descriptor is read out of the raylet binary.

The freshness test (test_protos_fresh.py) ties the generated modules to these sources.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, text_format
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
OUR_DIR = PROTOS / "gcs_ha" / "proto" / "ray"
DOCS = ROOT / "docs" / "protos.md"

Fdp = descriptor_pb2.FieldDescriptorProto

# Parts of Ray's messages/enums that we declare but leave incomplete, by full name ("ray.rpc.X.f"
# for a field, "ray.rpc.X.Nested" for a nested type, "ray.rpc.E.VALUE" for an enum value). Each one
# must also be listed in docs/protos.md. Keep in sync: stale entries fail the test too.
KNOWN_OMISSIONS: frozenset[str] = frozenset()

RAY_PACKAGES = ("ray.rpc", "ray.rpc.autoscaler", "ray.rpc.events", "ray.rpc.syncer")

# The services a real Ray 2.60 GCS serves (as listed by gRPC reflection on its port), and the ones
# it calls as a client (raylets, core workers). All must be declared with every method.
GCS_SERVED = (
    "ray.rpc.NodeInfoGcsService",
    "ray.rpc.NodeResourceInfoGcsService",
    "ray.rpc.JobInfoGcsService",
    "ray.rpc.ActorInfoGcsService",
    "ray.rpc.PlacementGroupInfoGcsService",
    "ray.rpc.InternalKVGcsService",
    "ray.rpc.ControlPlanePubSubGcsService",
    "ray.rpc.ObservabilityPubSubService",
    "ray.rpc.RuntimeEnvGcsService",
    "ray.rpc.WorkerInfoGcsService",
    "ray.rpc.TaskInfoGcsService",
    "ray.rpc.RayEventExportGcsService",
    "ray.rpc.autoscaler.AutoscalerStateService",
    "ray.rpc.syncer.RaySyncer",
)
GCS_CALLS = ("ray.rpc.NodeManagerService", "ray.rpc.CoreWorkerService")
GCS_SERVED_METHODS = 62  # 54 in gcs_service.proto, 7 autoscaler, 1 syncer

# Runs in a clean interpreter: imports Ray's generated modules only, writes a FileDescriptorSet.
_RAY_DUMP = r"""
import importlib, pkgutil, sys
from pathlib import Path
import ray
import ray.core.generated as generated
from google.protobuf import descriptor_pb2

files = {}

def add(fd):
    if fd.name not in files:
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        files[fd.name] = proto
        for dep in fd.dependencies:
            add(dep)

for info in pkgutil.iter_modules(generated.__path__):
    if info.name.endswith("_pb2"):
        add(importlib.import_module("ray.core.generated." + info.name).DESCRIPTOR)

def varint(buf, i):
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i

def embedded_descriptor(binary, name):
    # A serialized FileDescriptorProto starts with field 1 (its name); walk its fields until a
    # tag that no FileDescriptorProto field (1..14) can have, which marks the end.
    data = binary.read_bytes()
    start = data.find(b"\n" + bytes([len(name)]) + name.encode())
    if start < 0:
        sys.exit(f"{name} not found in {binary}")
    i = start
    while True:
        tag, j = varint(data, i)
        if not 1 <= tag >> 3 <= 14 or tag & 7 not in (0, 2):
            break
        size, j = varint(data, j)
        i = j + size if tag & 7 == 2 else j
    return descriptor_pb2.FileDescriptorProto.FromString(data[start:i])

raylet = Path(ray.__file__).parent / "core" / "src" / "ray" / "raylet" / "raylet"
syncer = embedded_descriptor(raylet, "src/ray/protobuf/ray_syncer.proto")
files[syncer.name] = syncer
sys.stdout.buffer.write(descriptor_pb2.FileDescriptorSet(file=list(files.values())).SerializeToString())
"""


@dataclass
class Schema:
    """Messages, enums and services of a FileDescriptorSet, by full name without the leading dot."""

    messages: dict[str, descriptor_pb2.DescriptorProto]
    enums: dict[str, descriptor_pb2.EnumDescriptorProto]
    syntax: dict[str, str]  # message or enum full name -> syntax of its file
    services: dict[str, descriptor_pb2.ServiceDescriptorProto]


def index(files: descriptor_pb2.FileDescriptorSet) -> Schema:
    """Flatten every (nested) message, enum and service of `files` into a Schema."""
    schema = Schema({}, {}, {}, {})

    def walk(prefix: str, msg: descriptor_pb2.DescriptorProto, syntax: str) -> None:
        name = f"{prefix}.{msg.name}"
        schema.messages[name] = msg
        schema.syntax[name] = syntax
        for nested in msg.nested_type:
            walk(name, nested, syntax)
        for enum in msg.enum_type:
            schema.enums[f"{name}.{enum.name}"] = enum
            schema.syntax[f"{name}.{enum.name}"] = syntax

    for fd in files.file:
        syntax = fd.syntax or "proto2"
        for msg in fd.message_type:
            walk(fd.package, msg, syntax)
        for enum in fd.enum_type:
            schema.enums[f"{fd.package}.{enum.name}"] = enum
            schema.syntax[f"{fd.package}.{enum.name}"] = syntax
        for service in fd.service:
            schema.services[f"{fd.package}.{service.name}"] = service
    return schema


def map_entry(
    schema: Schema, field: descriptor_pb2.FieldDescriptorProto
) -> descriptor_pb2.DescriptorProto | None:
    """The synthetic map-entry message behind a map field, or None for other fields."""
    if field.type != Fdp.TYPE_MESSAGE or field.label != Fdp.LABEL_REPEATED:
        return None
    entry = schema.messages.get(field.type_name.lstrip("."))
    return entry if entry is not None and entry.options.map_entry else None


def value_type(field: descriptor_pb2.FieldDescriptorProto) -> str:
    """A field's type: the referenced full name for messages and enums, else the scalar kind."""
    if field.type in (Fdp.TYPE_MESSAGE, Fdp.TYPE_ENUM):
        return field.type_name.lstrip(".")
    return Fdp.Type.Name(field.type)


def signature(
    schema: Schema, msg: descriptor_pb2.DescriptorProto, field: descriptor_pb2.FieldDescriptorProto
) -> dict[str, object]:
    """Everything about a field that matters on the wire or to generated code."""
    sig: dict[str, object] = {
        "name": field.name,
        "number": field.number,
        "packed": field.options.packed if field.options.HasField("packed") else None,
    }
    entry = map_entry(schema, field)
    if entry is not None:
        key, value = sorted(entry.field, key=lambda f: f.number)
        sig["shape"] = "map"
        sig["type"] = f"map<{value_type(key)}, {value_type(value)}>"
        return sig
    if field.label == Fdp.LABEL_REPEATED:
        sig["shape"] = "repeated"
    elif field.label == Fdp.LABEL_REQUIRED:
        sig["shape"] = "required"
    elif field.proto3_optional:
        sig["shape"] = "proto3 optional"
    elif field.HasField("oneof_index"):
        sig["shape"] = f"oneof {msg.oneof_decl[field.oneof_index].name}"
    else:
        sig["shape"] = "singular"
    sig["type"] = value_type(field)
    return sig


def compare(ours: Schema, ray: Schema) -> list[str]:
    """Every way our declarations disagree with Ray's (an empty list when they conform)."""
    problems: list[str] = []
    for name, msg in ours.messages.items():
        if msg.options.map_entry:
            continue  # checked through the map field's key and value types
        theirs = ray.messages.get(name)
        if theirs is None:
            problems.append(f"message {name}: not in Ray")
            continue
        if ours.syntax[name] != ray.syntax[name]:
            problems.append(f"message {name}: syntax {ours.syntax[name]} != {ray.syntax[name]}")
        by_number = {f.number: f for f in theirs.field}
        for field in msg.field:
            mine = signature(ours, msg, field)
            other = by_number.get(field.number)
            if other is None:
                problems.append(f"field {name}.{field.name} = {field.number}: not in Ray")
            elif mine != (expected := signature(ray, theirs, other)):
                problems.append(f"field {name}.{field.name}: ours {mine} != Ray's {expected}")
    for name, enum in ours.enums.items():
        theirs_enum = ray.enums.get(name)
        if theirs_enum is None:
            problems.append(f"enum {name}: not in Ray")
            continue
        values = {v.name: v.number for v in theirs_enum.value}
        for value in enum.value:
            if values.get(value.name) != value.number:
                problems.append(
                    f"enum value {name}.{value.name} = {value.number}: Ray has "
                    f"{values.get(value.name)}"
                )
    return problems + compare_services(ours, ray)


def method_signature(method: descriptor_pb2.MethodDescriptorProto) -> tuple[str, str, bool, bool]:
    """What a gRPC peer relies on besides the name: request, reply and streaming on each side."""
    return (
        method.input_type.lstrip("."),
        method.output_type.lstrip("."),
        method.client_streaming,
        method.server_streaming,
    )


def compare_services(ours: Schema, ray: Schema) -> list[str]:
    """Every way our services and methods disagree with Ray's."""
    problems: list[str] = []
    for name, service in ours.services.items():
        theirs = ray.services.get(name)
        if theirs is None:
            problems.append(f"service {name}: not in Ray")
            continue
        by_name = {m.name: m for m in theirs.method}
        for method in service.method:
            other = by_name.get(method.name)
            if other is None:
                problems.append(f"method {name}.{method.name}: not in Ray")
            elif (mine := method_signature(method)) != (expected := method_signature(other)):
                problems.append(f"method {name}.{method.name}: ours {mine} != Ray's {expected}")
    return problems


def omissions(ours: Schema, ray: Schema) -> set[str]:
    """Parts of Ray's versions of our messages, enums and services that we do not declare."""
    missing: set[str] = set()
    for name, msg in ours.messages.items():
        theirs = ray.messages.get(name)
        if theirs is None or msg.options.map_entry:
            continue
        numbers = {f.number for f in msg.field}
        missing |= {f"{name}.{f.name}" for f in theirs.field if f.number not in numbers}
        nested = {n.name for n in msg.nested_type} | {e.name for e in msg.enum_type}
        their_nested = {n.name for n in theirs.nested_type} | {e.name for e in theirs.enum_type}
        missing |= {f"{name}.{n}" for n in their_nested - nested}
    for name, enum in ours.enums.items():
        theirs_enum = ray.enums.get(name)
        if theirs_enum is not None:
            have = {v.name for v in enum.value}
            missing |= {f"{name}.{v.name}" for v in theirs_enum.value if v.name not in have}
    for name, service in ours.services.items():
        theirs_service = ray.services.get(name)
        if theirs_service is not None:
            methods = {m.name for m in service.method}
            missing |= {f"{name}.{m.name}" for m in theirs_service.method if m.name not in methods}
    return missing


def our_files() -> list[str]:
    return sorted(str(p.relative_to(PROTOS)) for p in OUR_DIR.glob("*.proto"))


@pytest.fixture(scope="module")
def ours_set(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorSet:
    out = tmp_path_factory.mktemp("ours") / "ours.pb"
    include = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTOS}", f"-I{include}", f"--descriptor_set_out={out}"]
    assert protoc.main([*args, *our_files()]) == 0, "protoc failed on our ray protos"
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


@pytest.fixture(scope="module")
def ray_schema() -> Schema:
    proc = subprocess.run(
        [sys.executable, "-c", _RAY_DUMP], capture_output=True, check=False, timeout=120
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return index(descriptor_pb2.FileDescriptorSet.FromString(proc.stdout))


@pytest.fixture(scope="module")
def ours(ours_set: descriptor_pb2.FileDescriptorSet) -> Schema:
    return index(ours_set)


def test_our_files_use_rays_packages(ours_set: descriptor_pb2.FileDescriptorSet) -> None:
    assert len(ours_set.file) == len(our_files()) >= 2
    for fd in ours_set.file:
        assert fd.package in RAY_PACKAGES, fd.name
        assert fd.syntax == "proto3", fd.name


def test_table_records_are_declared(ours: Schema) -> None:
    records = [
        "JobTableData",
        "ActorTableData",
        "TaskSpec",
        "PlacementGroupTableData",
        "GcsNodeInfo",
        "WorkerTableData",
        "ErrorTableData",
    ]
    assert [r for r in records if f"ray.rpc.{r}" not in ours.messages] == []


def test_every_declaration_matches_ray(ours: Schema, ray_schema: Schema) -> None:
    assert compare(ours, ray_schema) == []


def test_omissions_are_exactly_the_listed_ones(ours: Schema, ray_schema: Schema) -> None:
    assert omissions(ours, ray_schema) == set(KNOWN_OMISSIONS)
    docs = DOCS.read_text()
    assert [name for name in KNOWN_OMISSIONS if name not in docs] == []


def test_gcs_services_are_declared_whole(ours: Schema, ray_schema: Schema) -> None:
    """Every service the GCS serves or calls is ours, with all of Ray's methods (no omissions)."""
    assert [s for s in GCS_SERVED + GCS_CALLS if s not in ours.services] == []
    served = [m.name for s in GCS_SERVED for m in ours.services[s].method]
    assert len(served) == GCS_SERVED_METHODS
    assert [
        f"{s}.{m.name}"
        for s in GCS_SERVED + GCS_CALLS
        for m in ray_schema.services[s].method
        if m.name not in {ours_method.name for ours_method in ours.services[s].method}
    ] == []


def test_ray_reference_is_complete(ray_schema: Schema) -> None:
    """Guards the reference itself: an empty or truncated dump would make comparisons vacuous."""
    assert len(ray_schema.messages["ray.rpc.TaskSpec"].field) >= 40
    syncer = ray_schema.messages["ray.rpc.syncer.ResourceViewSyncMessage"]
    assert [f.number for f in syncer.field] == list(range(1, 9))
    assert sum(len(ray_schema.services[s].method) for s in GCS_SERVED) == GCS_SERVED_METHODS
    start_sync = ray_schema.services["ray.rpc.syncer.RaySyncer"].method[0]
    batch = "ray.rpc.syncer.RaySyncMessageBatch"
    assert method_signature(start_sync) == (batch, batch, True, True)


# --- negative checks: the comparator must notice each kind of drift -------------------------


def _field(files: descriptor_pb2.FileDescriptorSet, message: str, field: str) -> Fdp:
    for fd in files.file:
        for msg in _messages(fd.package, fd.message_type):
            if msg[0] == message:
                return next(f for f in msg[1].field if f.name == field)
    raise KeyError(f"{message}.{field}")


def _messages(
    prefix: str, msgs: Iterable[descriptor_pb2.DescriptorProto]
) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
    for msg in msgs:
        yield f"{prefix}.{msg.name}", msg
        yield from _messages(f"{prefix}.{msg.name}", msg.nested_type)


def _enum(files: descriptor_pb2.FileDescriptorSet, name: str) -> descriptor_pb2.EnumDescriptorProto:
    for fd in files.file:
        for enum in fd.enum_type:
            if f"{fd.package}.{enum.name}" == name:
                return enum
    raise KeyError(name)


def _renumber(s: descriptor_pb2.FileDescriptorSet) -> None:
    _field(s, "ray.rpc.ActorTableData", "name").number = 99


def _rename(s: descriptor_pb2.FileDescriptorSet) -> None:
    _field(s, "ray.rpc.ActorTableData", "name").name = "actor_name"


def _retype_scalar(s: descriptor_pb2.FileDescriptorSet) -> None:
    _field(s, "ray.rpc.JobTableData", "job_id").type = Fdp.TYPE_STRING


def _retype_message(s: descriptor_pb2.FileDescriptorSet) -> None:
    _field(s, "ray.rpc.JobTableData", "driver_address").type_name = ".ray.rpc.JobConfig"


def _unrepeat(s: descriptor_pb2.FileDescriptorSet) -> None:
    _field(s, "ray.rpc.ActorTableData", "resource_mapping").label = Fdp.LABEL_OPTIONAL


def _drop_presence(s: descriptor_pb2.FileDescriptorSet) -> None:
    field = _field(s, "ray.rpc.JobTableData", "job_info")
    field.proto3_optional = False
    field.ClearField("oneof_index")


def _map_value(s: descriptor_pb2.FileDescriptorSet) -> None:
    _field(s, "ray.rpc.TaskSpec.RequiredResourcesEntry", "value").type = Fdp.TYPE_FLOAT


def _map_to_list(s: descriptor_pb2.FileDescriptorSet) -> None:
    for _, msg in _messages("ray.rpc", _file(s, "gcs").message_type):
        if msg.name == "LabelsEntry":
            msg.options.map_entry = False


def _enum_number(s: descriptor_pb2.FileDescriptorSet) -> None:
    next(v for v in _enum(s, "ray.rpc.Language").value if v.name == "JAVA").number = 5


def _enum_name(s: descriptor_pb2.FileDescriptorSet) -> None:
    next(v for v in _enum(s, "ray.rpc.Language").value if v.name == "CPP").name = "CXX"


def _extra_message(s: descriptor_pb2.FileDescriptorSet) -> None:
    _file(s, "gcs").message_type.add(name="NotARayMessage")


def _extra_field(s: descriptor_pb2.FileDescriptorSet) -> None:
    msg = next(m for m in _file(s, "gcs").message_type if m.name == "ErrorTableData")
    msg.field.add(name="extra", number=999, label=Fdp.LABEL_OPTIONAL, type=Fdp.TYPE_BOOL)


def _syncer_field(s: descriptor_pb2.FileDescriptorSet) -> None:
    _field(s, "ray.rpc.syncer.RaySyncMessage", "node_id").number = 5


def _file(s: descriptor_pb2.FileDescriptorSet, stem: str) -> descriptor_pb2.FileDescriptorProto:
    return next(fd for fd in s.file if fd.name.endswith(f"/{stem}.proto"))


def _method(
    s: descriptor_pb2.FileDescriptorSet, service: str, method: str
) -> descriptor_pb2.MethodDescriptorProto:
    for fd in s.file:
        for svc in fd.service:
            if f"{fd.package}.{svc.name}" == service:
                return next(m for m in svc.method if m.name == method)
    raise KeyError(f"{service}.{method}")


def _method_input(s: descriptor_pb2.FileDescriptorSet) -> None:
    method = _method(s, "ray.rpc.NodeInfoGcsService", "CheckAlive")
    method.input_type = ".ray.rpc.GetClusterIdRequest"


def _method_output(s: descriptor_pb2.FileDescriptorSet) -> None:
    _method(s, "ray.rpc.CoreWorkerService", "PushTask").output_type = ".ray.rpc.KillActorReply"


def _method_streaming(s: descriptor_pb2.FileDescriptorSet) -> None:
    _method(s, "ray.rpc.syncer.RaySyncer", "StartSync").client_streaming = False


def _method_name(s: descriptor_pb2.FileDescriptorSet) -> None:
    _method(s, "ray.rpc.NodeManagerService", "KillLocalActor").name = "KillActor"


def _extra_service(s: descriptor_pb2.FileDescriptorSet) -> None:
    _file(s, "gcs_service").service.add(name="NotARayService")


DRIFTS: dict[str, Callable[[descriptor_pb2.FileDescriptorSet], None]] = {
    "renumbered field": _renumber,
    "renamed field": _rename,
    "scalar type": _retype_scalar,
    "message type": _retype_message,
    "repeated to singular": _unrepeat,
    "proto3 optional dropped": _drop_presence,
    "map value type": _map_value,
    "map to repeated message": _map_to_list,
    "enum value number": _enum_number,
    "enum value name": _enum_name,
    "unknown message": _extra_message,
    "unknown field": _extra_field,
    "syncer field": _syncer_field,
    "method request type": _method_input,
    "method reply type": _method_output,
    "method streaming flag": _method_streaming,
    "method renamed": _method_name,
    "unknown service": _extra_service,
}


@pytest.mark.parametrize("drift", sorted(DRIFTS))
def test_comparator_catches_drift(
    drift: str, ours_set: descriptor_pb2.FileDescriptorSet, ray_schema: Schema
) -> None:
    altered = descriptor_pb2.FileDescriptorSet()
    altered.CopyFrom(ours_set)
    DRIFTS[drift](altered)
    assert altered != ours_set
    assert compare(index(altered), ray_schema) != []


def test_omission_check_notices_a_dropped_field(
    ours_set: descriptor_pb2.FileDescriptorSet, ray_schema: Schema
) -> None:
    altered = descriptor_pb2.FileDescriptorSet()
    altered.CopyFrom(ours_set)
    msg = next(m for m in _file(altered, "gcs").message_type if m.name == "GcsNodeInfo")
    del msg.field[0]
    assert omissions(index(altered), ray_schema) - set(KNOWN_OMISSIONS) == {
        "ray.rpc.GcsNodeInfo.node_id"
    }


def test_omission_check_notices_a_dropped_method(
    ours_set: descriptor_pb2.FileDescriptorSet, ray_schema: Schema
) -> None:
    altered = descriptor_pb2.FileDescriptorSet()
    altered.CopyFrom(ours_set)
    service = next(s for s in _file(altered, "node_manager").service)
    methods = [m for m in service.method if m.name != "GlobalGC"]
    del service.method[:]
    service.method.extend(methods)
    assert omissions(index(altered), ray_schema) - set(KNOWN_OMISSIONS) == {
        "ray.rpc.NodeManagerService.GlobalGC"
    }


# --- wire round trip: bytes we write, Ray's generated classes read back unchanged ----------------

_RAY_DECODE = r"""
import importlib, sys
from google.protobuf import text_format
module, name = sys.argv[1], sys.argv[2]
cls = getattr(importlib.import_module("ray.core.generated." + module), name)
msg = cls.FromString(sys.stdin.buffer.read())
sys.stdout.write(text_format.MessageToString(msg))
sys.stdout.flush()
sys.stdout.buffer.write(b"\0" + msg.SerializeToString(deterministic=True))
"""

SAMPLES: dict[str, tuple[str, str, str]] = {
    "ActorTableData": (
        "gcs",
        "gcs_pb2",
        """
        actor_id: "a1" job_id: "j1" state: DEAD max_restarts: -1 name: "det"
        address { node_id: "n" ip_address: "127.0.0.1" port: 1234 worker_id: "w" }
        function_descriptor { python_function_descriptor { module_name: "m" class_name: "C" } }
        death_cause { actor_died_error_context { reason: RAY_KILL
          node_death_info { reason: AUTOSCALER_DRAIN_IDLE reason_message: "idle" } } }
        required_resources { key: "CPU" value: 1.5 } node_id: "" call_site: "here"
        fallback_strategy { options { label_selector { label_constraints {
          label_key: "zone" operator: LABEL_OPERATOR_NOT_IN label_values: "b" } } } }
        previous_incarnations { worker_id: "w0" node_id: "n0" }
        """,
    ),
    "TaskSpec": (
        "common",
        "common_pb2",
        """
        type: ACTOR_CREATION_TASK language: PYTHON job_id: "j" num_returns: 1
        args { object_ref { object_id: "o" } is_inlined: true }
        required_resources { key: "GPU" value: 2 }
        actor_creation_task_spec { actor_id: "a" max_actor_restarts: 3
          concurrency_groups { name: "io" max_concurrency: 2 } }
        scheduling_strategy { placement_group_scheduling_strategy {
          placement_group_id: "pg" placement_group_bundle_index: -1 } }
        runtime_env_info { serialized_runtime_env: "{}" uris { py_modules_uris: "u" } }
        job_config { ray_namespace: "ns" default_actor_lifetime: NON_DETACHED }
        num_streaming_generator_returns: 0 labels { key: "k" value: "v" }
        """,
    ),
    "PlacementGroupTableData": (
        "gcs",
        "gcs_pb2",
        """
        placement_group_id: "pg" strategy: STRICT_SPREAD state: RESCHEDULING
        bundles { bundle_id { placement_group_id: "pg" bundle_index: 1 }
          unit_resources { key: "CPU" value: 1 } label_selector { key: "a" value: "b" } }
        stats { scheduling_state: FAILED_TO_COMMIT_RESOURCES scheduling_attempt: 4 }
        topology_strategy { key: "x" value: PACK }
        """,
    ),
    "GcsNodeInfo": (
        "gcs",
        "gcs_pb2",
        """
        node_id: "n" node_manager_address: "127.0.0.1" node_manager_port: 7 state: DEAD
        resources_total { key: "CPU" value: 2 } labels { key: "l" value: "v" }
        state_snapshot { state: DRAINING node_activity: "busy" }
        death_info { reason: UNEXPECTED_TERMINATION } is_head_node: true session_dir: "/s"
        """,
    ),
    "WorkerTableData": (
        "gcs",
        "gcs_pb2",
        """
        is_alive: false worker_type: SPILL_WORKER worker_info { key: "k" value: "\\001" }
        creation_task_exception { language: JAVA serialized_exception: "e" }
        exit_type: NODE_OUT_OF_MEMORY exit_detail: "" debugger_port: 0 job_id: "j"
        """,
    ),
    "JobTableData": (
        "gcs",
        "gcs_pb2",
        """
        job_id: "j" is_dead: true driver_address { port: 1 }
        config { metadata { key: "k" value: "v" }
          runtime_env_info { serialized_runtime_env: "{}" } }
        job_info { status: "RUNNING" entrypoint_num_cpus: 0 metadata { key: "a" value: "b" } }
        is_running_tasks: false
        """,
    ),
    # Requests and replies: one per file, covering pubsub's status at field 100, oneof payloads,
    # cross-package references and the well-known Timestamp.
    "GcsSubscriberPollReply": (
        "gcs_service",
        "gcs_service_pb2",
        """
        pub_messages { channel_type: GCS_ACTOR_CHANNEL key_id: "a" sequence_id: 7
          actor_message { actor_id: "a" state: ALIVE } }
        pub_messages { channel_type: RAY_LOG_CHANNEL sequence_id: 8
          log_batch_message { ip: "127.0.0.1" pid: "12" lines: "hello" } }
        publisher_id: "pub" status { code: 17 message: "m" }
        """,
    ),
    "GcsSubscriberCommandBatchRequest": (
        "gcs_service",
        "gcs_service_pb2",
        """
        subscriber_id: "s" sender_id: "n"
        commands { channel_type: GCS_NODE_ADDRESS_AND_LIVENESS_CHANNEL subscribe_message { } }
        commands { channel_type: GCS_ACTOR_CHANNEL key_id: "a" unsubscribe_message { } }
        """,
    ),
    "RequestWorkerLeaseRequest": (
        "node_manager",
        "node_manager_pb2",
        """
        lease_spec { lease_id: "l" job_id: "j" type: ACTOR_CREATION_TASK actor_id: "a"
          required_resources { key: "CPU" value: 1 }
          scheduling_strategy { node_affinity_scheduling_strategy { node_id: "n" soft: true } }
          function_descriptor { python_function_descriptor { module_name: "m" } } }
        backlog_size: 0 grant_or_reject: true
        """,
    ),
    "PushTaskRequest": (
        "core_worker",
        "core_worker_pb2",
        """
        intended_worker_id: "w" sequence_number: -1
        task_spec { type: ACTOR_CREATION_TASK actor_creation_task_spec { actor_id: "a" } }
        resource_mapping { name: "CPU" resource_ids { index: 0 quantity: 1 } }
        """,
    ),
    "GetClusterResourceStateReply": (
        "autoscaler",
        "autoscaler_pb2",
        """
        cluster_resource_state { cluster_resource_state_version: 3
          node_states { node_id: "n" status: IDLE available_resources { key: "CPU" value: 1 } }
          pending_resource_requests { count: 2 request { resources_bundle { key: "GPU" value: 1 }
            label_selectors { label_constraints { label_key: "z" label_values: "a" } } } } }
        """,
    ),
    "AddEventsRequest": (
        "events",
        "events_event_aggregator_service_pb2",
        """
        events_data { events { event_id: "e" source_type: GCS event_type: NODE_LIFECYCLE_EVENT
          timestamp { seconds: 5 nanos: 6 } severity: INFO
          node_lifecycle_event { node_id: "n" state_transitions { state: DEAD
            death_info { reason: EXPECTED_TERMINATION } } } }
          task_events_metadata { dropped_task_attempts { task_id: "t" attempt_number: 1 } } }
        """,
    ),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_ray_decodes_our_bytes_unchanged(name: str) -> None:
    """Serialize with our classes, decode with Ray's: same text, same deterministic bytes."""
    ours_module, ray_module, text = SAMPLES[name]
    cls = getattr(importlib.import_module(f"gcs_ha.proto.ray.{ours_module}_pb2"), name)
    msg = text_format.Parse(text, cls())
    proc = subprocess.run(
        [sys.executable, "-c", _RAY_DECODE, ray_module, name],
        input=msg.SerializeToString(deterministic=True),
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    ray_text, _, ray_bytes = proc.stdout.partition(b"\0")
    assert ray_text.decode() == text_format.MessageToString(msg)
    assert ray_bytes == msg.SerializeToString(deterministic=True)
