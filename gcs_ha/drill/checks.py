"""What a drill's history and the cluster's end state say.

- Linearizability of the register keys (gcs_ha.drill.linearizability), with one final
  read of every key appended: a write acknowledged and then lost shows up as a final
  read that no order explains.
- Lost writes: every acknowledged ledger write must be stored with its value at the end;
  a stored ledger key that no call could have written is a phantom.
- Divergence: the replicas' table digests, taken once they all applied the same index.
- Availability: the client-visible outage around each fault (kvload.outage_around: the
  last acknowledged write completed before the fault to the first acknowledged write
  invoked after it began).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from gcs_ha.admin_client import AdminClient
from gcs_ha.drill.faults import Fault
from gcs_ha.drill.linearizability import check_history
from gcs_ha.drill.result import DrillResult, FaultOutage
from gcs_ha.drill.workload import LEDGER_PREFIX, REGISTER_PREFIX
from gcs_ha.errors import GcsHaError
from gcs_ha.testing.kvload import Op, check_unique_writes, outage_around


def digests(replicas: Mapping[str, str], timeout: float = 30.0) -> dict[str, str]:
    """Every replica's table digest ("index:digest"; `replicas` maps names to gRPC
    addresses), once all report the same applied index (the load has stopped; the
    leader may still be writing its own bookkeeping for a moment). If they never agree
    on an index, the digests as they are (the report shows them)."""
    end = time.monotonic() + timeout
    while True:
        found: dict[str, tuple[int, str]] = {}
        for name, address in replicas.items():
            try:
                with AdminClient(address, 10.0) as client:
                    found[name] = client.digest()
            except GcsHaError:
                continue
        indexes = {index for index, _ in found.values()}
        complete = len(found) == len(replicas)
        if (complete and len(indexes) == 1) or time.monotonic() >= end:
            return {name: f"{index}:{digest}" for name, (index, digest) in found.items()}
        time.sleep(0.2)


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
    )
