"""The dependency rule of architecture.md, checked with `ast` over gcs_ha/, and the rule
that unit tests open no ports and start no processes (those are integration tests).

Every import counts: at module level, in a function, under TYPE_CHECKING. The checks run
on the tree and on a small synthetic tree that breaks each rule, so they can fail.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "gcs_ha"
UNIT_TESTS = ROOT / "tests" / "unit"

# What a package may never import (prefixes of module names).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "managers": ("gcs_ha.consensus", "gcs_ha.server", "grpc", "lmdb", "pysyncobj"),
    "storage": ("gcs_ha.consensus", "gcs_ha.managers", "gcs_ha.server", "grpc", "pysyncobj"),
    "consensus": ("gcs_ha.managers", "gcs_ha.server", "grpc"),
}
# Third-party modules only one module of gcs_ha may import.
ONLY_IN = {"pysyncobj": "consensus/_pysyncobj.py", "lmdb": "storage/lmdb_env.py"}
# Import cycles between gcs_ha's packages and top-level modules that exist today, each
# to be removed (issue 16); the test fails on any other cycle, and when one is gone.
KNOWN_CYCLES: set[frozenset[str]] = set()
# Import cycles between modules that exist today (the package's __init__ re-exports).
KNOWN_MODULE_CYCLES: set[frozenset[str]] = set()
# What a unit test may not call or import: ports, servers, processes.
PORT_CALLS = {"add_insecure_port", "add_secure_port", "start_server", "create_server", "bind"}
PROCESS_CALLS = {"Popen", "ProcessCluster", "InProcessCluster", "FakeRaylet", "FakeWorker"}
PROCESS_MODULES = ("subprocess", "multiprocessing", "gcs_ha.testing.cluster")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def imported(root: Path, path: Path) -> tuple[str, ...]:
    """Every module `path` imports, absolute; `from m import n` gives m and m.n."""
    return tuple(_imports(root, path))


def _imports(root: Path, path: Path) -> Iterator[str]:
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def sources(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "proto" not in p.relative_to(root).parts)


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_violations(root: Path) -> list[str]:
    found = []
    for path in sources(root):
        rel = path.relative_to(root)
        banned = FORBIDDEN.get(rel.parts[0], ()) if len(rel.parts) > 1 else ()
        for module in set(imported(root, path)):
            found += [f"{rel} imports {module}" for p in banned if within(module, p)]
            found += [
                f"{rel} imports {module} (only {home} may)"
                for lib, home in ONLY_IN.items()
                if within(module, lib) and rel.as_posix() != home
            ]
    return sorted(found)


def unit_of(root: Path, module: str) -> str | None:
    """The package (or top-level module) of gcs_ha that `module` belongs to."""
    parts = module.split(".")
    if parts[0] != root.name or len(parts) < 2:
        return None
    exists = (root / parts[1]).is_dir() or (root / f"{parts[1]}.py").is_file()
    return parts[1] if exists and parts[1] != "proto" else None


def package_graph(root: Path) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sources(root):
        source = unit_of(root, module_name(root, path))
        if source is None:
            continue
        targets = {unit_of(root, m) for m in imported(root, path)}
        graph.setdefault(source, set()).update(t for t in targets if t and t != source)
    return graph


def module_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of gcs_ha it imports (`from m import name`: m, or m.name
    when that is a module)."""
    modules = {module_name(root, p): p for p in sources(root)}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in imported(root, path):
            target = name
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target not in ("", module, root.name):
                targets.add(target)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while (top := stack.pop()) != node:
                component.append(top)
            if component:
                found.add(frozenset([node, *component]))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def unit_test_violations(tests: Path) -> list[str]:
    found = []
    for path in sorted(tests.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in PORT_CALLS | PROCESS_CALLS:
                    found.append(f"{path.name}:{node.lineno} calls {name}")
        for module in imported(tests, path):
            if any(within(module, p) for p in PROCESS_MODULES):
                found.append(f"{path.name} imports {module}")
    return sorted(set(found))


# -- the tree --------------------------------------------------------------------------


def test_layers_and_single_importers_hold() -> None:
    assert layer_violations(PACKAGE) == []


def test_no_new_import_cycle_between_packages() -> None:
    assert cycles(package_graph(PACKAGE)) == KNOWN_CYCLES


def test_no_new_import_cycle_between_modules() -> None:
    # consensus/membership.py and replica.py imported each other until membership got
    # its collaborators (MembershipDeps) instead of the replica
    assert cycles(module_graph(PACKAGE)) == KNOWN_MODULE_CYCLES


def test_unit_tests_open_no_ports_and_start_no_processes() -> None:
    assert unit_test_violations(UNIT_TESTS) == []


# -- the checks can fail -------------------------------------------------------------------


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    return write(
        tmp_path / "gcs_ha",
        {
            "__init__.py": "",
            "managers/__init__.py": "",
            "managers/actors/scheduler.py": "import grpc\nfrom ...consensus import api\n",
            "managers/kv.py": "def f():\n    from gcs_ha.server import x\n",
            "storage/lmdb_env.py": "import lmdb\n",
            "storage/other.py": "from lmdb import Environment\nimport pysyncobj.syncobj\n",
            "consensus/_pysyncobj.py": "import pysyncobj\nfrom gcs_ha import storage\n",
            "consensus/api.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from gcs_ha.server.gcs_server import GcsServer\n",
            "server/__init__.py": "from gcs_ha.managers import kv\n",
        },
    )


def test_layer_check_finds_each_broken_rule(broken: Path) -> None:
    assert layer_violations(broken) == [
        "consensus/api.py imports gcs_ha.server.gcs_server",
        "consensus/api.py imports gcs_ha.server.gcs_server.GcsServer",
        "managers/actors/scheduler.py imports gcs_ha.consensus",
        "managers/actors/scheduler.py imports gcs_ha.consensus.api",
        "managers/actors/scheduler.py imports grpc",
        "managers/kv.py imports gcs_ha.server",
        "managers/kv.py imports gcs_ha.server.x",
        "storage/other.py imports lmdb (only storage/lmdb_env.py may)",
        "storage/other.py imports lmdb.Environment (only storage/lmdb_env.py may)",
        "storage/other.py imports pysyncobj.syncobj",
        "storage/other.py imports pysyncobj.syncobj (only consensus/_pysyncobj.py may)",
    ]


def test_cycle_check_finds_a_cycle_through_a_lazy_import(broken: Path) -> None:
    # managers -> consensus (relative import) -> server (TYPE_CHECKING) -> managers
    assert cycles(package_graph(broken)) == {frozenset({"managers", "consensus", "server"})}


def test_module_cycle_check_finds_two_modules_importing_each_other(tmp_path: Path) -> None:
    root = write(
        tmp_path / "gcs_ha",
        {
            "consensus/replica.py": "from gcs_ha.consensus.membership import Ops\n",
            "consensus/membership.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from gcs_ha.consensus.replica import Replica\n",
            "consensus/api.py": "from gcs_ha.consensus import replica\n",
        },
    )
    expected = {frozenset({"gcs_ha.consensus.replica", "gcs_ha.consensus.membership"})}
    assert cycles(module_graph(root)) == expected


def test_unit_test_check_finds_ports_and_processes(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "test_a.py": "import grpc.aio\ns = grpc.aio.server()\ns.add_insecure_port('x')\n",
            "test_b.py": "import subprocess\n",
            "test_c.py": "from gcs_ha.testing.fake_raylet import FakeRaylet\nFakeRaylet(n)\n",
            "test_d.py": "import socket\nsocket.socketpair()\n",
        },
    )
    assert unit_test_violations(tmp_path) == [
        "test_a.py:3 calls add_insecure_port",
        "test_b.py imports subprocess",
        "test_c.py:2 calls FakeRaylet",
    ]
