"""Readers shared by the tests of deploy/ and the Dockerfile: the files parsed as the
tools that use them parse them (YAML by PyYAML, flags by gcs-ha's own click commands)."""

from __future__ import annotations

import copy
import functools
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gcs_ha.addresses import split_address
from gcs_ha.cli import cli

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
KUBERNETES = ROOT / "deploy" / "kubernetes"
RAYCLUSTER = KUBERNETES / "kuberay" / "raycluster.yaml"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, USER, ...
    args: str  # the rest of the (joined) line


def dockerfile(path: Path = DOCKERFILE) -> list[Instruction]:
    """The instructions of a Dockerfile: comments dropped, continuation lines joined."""
    out: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    return out


def only(instructions: Sequence[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in instructions if i.keyword == keyword]


def exec_form(args: str) -> list[str]:
    """["a", "b"] (JSON exec form) of ENTRYPOINT/CMD/VOLUME, else the words."""
    if args.startswith("["):
        value = json.loads(args)
        assert isinstance(value, list)
        return [str(v) for v in value]
    return shlex.split(args)


def build_args(instructions: Sequence[Instruction]) -> dict[str, str]:
    """ARG name=default of the Dockerfile."""
    out = {}
    for arg in only(instructions, "ARG"):
        name, _, default = arg.args.partition("=")
        out[name] = default
    return out


LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # safe either way


@functools.cache
def _parsed(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=LOADER) if doc]


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    """The documents of a YAML file (a fresh copy each call: tests may change it)."""
    return copy.deepcopy(_parsed(path))


def kubernetes_objects() -> list[dict[str, Any]]:
    """Every object of deploy/kubernetes/*.yaml (not the KubeRay sample below it)."""
    return [doc for path in sorted(KUBERNETES.glob("*.yaml")) for doc in yaml_documents(path)]


def by_kind(objects: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of command, args and env values (unknown names stay)."""
    return _REF.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def container_env(container: Mapping[str, Any], field_values: Mapping[str, str]) -> dict[str, str]:
    """A container's environment as Kubernetes builds it: values expanded in order;
    `field_values` stands in for the downward API (fieldPath -> value)."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(str(var["value"]), env)
        else:
            field = var["valueFrom"]["fieldRef"]["fieldPath"]
            env[var["name"]] = field_values[field]
    return env


def start_params(args: Sequence[str]) -> dict[str, Any]:
    """`gcs-ha start ARGS` parsed by gcs-ha's own command (click raises on an unknown or
    missing option): option name -> value, as `start` would receive them."""
    assert args[0] == "start", args
    command = cli.commands["start"]
    ctx = command.make_context("start", list(args[1:]))
    return dict(ctx.params)


def host_of(address: str) -> str:
    return split_address(address)[0]


def port_of(address: str) -> int:
    return split_address(address)[1]
