"""What a drill's history and the cluster's end state say: linearizability, lost writes,
replica divergence, one leader per term, and the outage around each fault.

The checks are described in DESIGN.md ("The checks").
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from gcs_ha.admin_client import AdminClient
from gcs_ha.drill.faults import Fault
from gcs_ha.drill.linearizability import check_history
from gcs_ha.drill.result import DrillResult, FaultOutage
from gcs_ha.drill.workload import LEDGER_PREFIX, REGISTER_PREFIX
from gcs_ha.errors import GcsHaError
from gcs_ha.testing.kvload import Op, check_unique_writes, outage_around


def digests(
    replicas: Mapping[str, str], key: bytes | None, timeout: float = 30.0
) -> dict[str, str]:
    """Every replica's table digest ("index:digest"; `replicas` maps names to gRPC
    addresses; `key` signs the calls, gcs_ha.admin_auth), once all report the same
    applied index (the load has stopped; the leader may still be writing its own
    bookkeeping for a moment). If they never agree on an index, the digests as they are
    (the report shows them)."""
    end = time.monotonic() + timeout
    while True:
        found: dict[str, tuple[int, str]] = {}
        for name, address in replicas.items():
            try:
                with AdminClient(address, 10.0, key) as client:
                    found[name] = client.digest()
            except GcsHaError:
                continue
        indexes = {index for index, _ in found.values()}
        complete = len(found) == len(replicas)
        if (complete and len(indexes) == 1) or time.monotonic() >= end:
            return {name: f"{index}:{digest}" for name, (index, digest) in found.items()}
        time.sleep(0.2)


_SERVING = re.compile(rb"serving as leader of term (\d+)")


def leaders_by_term(logs: Mapping[str, Path]) -> dict[int, tuple[str, ...]]:
    """Term -> the replicas whose log says they served as leader in it (`logs` maps
    replica names to their log files; a missing file counts as no line)."""
    found: dict[int, set[str]] = {}
    for name, path in logs.items():
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            continue
        for match in _SERVING.finditer(text):
            found.setdefault(int(match.group(1)), set()).add(name)
    return {term: tuple(sorted(names)) for term, names in sorted(found.items())}


def outages(history: Sequence[Op], faults: Sequence[Fault]) -> tuple[FaultOutage, ...]:
    out = []
    for fault in faults:
        window = outage_around(history, fault.start)
        out.append(FaultOutage(fault, None if window is None else window.duration))
    return tuple(out)


def evaluate(
    *,
    config: dict[str, object],
    started: float,
    ended: float,
    history: Sequence[Op],
    finals: Sequence[Op],
    ledger: Mapping[bytes, bytes],
    faults: Sequence[Fault],
    digests: Mapping[str, str],
    notes: Sequence[str] = (),
    leaders: Mapping[int, tuple[str, ...]] | None = None,
) -> DrillResult:
    """Run every check and put the verdicts together."""
    registers = [op for op in history if op.key.startswith(REGISTER_PREFIX)]
    writes = [op for op in history if op.key.startswith(LEDGER_PREFIX)]
    linear = check_history([*registers, *finals])
    ledger_check = check_unique_writes(writes, ledger)
    return DrillResult(
        config=dict(config),
        started=started,
        ended=ended,
        history=tuple(history),
        faults=tuple(faults),
        linearizability=linear,
        lost_writes=ledger_check.lost,
        digests=dict(digests),
        outages=outages(history, faults),
        notes=tuple(notes),
        phantom_writes=ledger_check.phantom,
        leaders=None if leaders is None else dict(leaders),
    )
