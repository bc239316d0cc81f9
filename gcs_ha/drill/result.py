"""What a drill produced: the history, the faults, and what the checks found."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gcs_ha.drill.faults import Fault
from gcs_ha.drill.linearizability import LinearizabilityResult
from gcs_ha.testing.kvload import Op


@dataclass(frozen=True)
class FaultOutage:
    """The client-visible outage around one fault: from the last acknowledged operation
    that completed before the fault began to the first acknowledged operation invoked
    after it began (None: no acknowledgement on one side, e.g. the drill ended)."""

    fault: Fault
    outage_s: float | None


@dataclass(frozen=True)
class DrillResult:
    """Everything a report needs. Times are time.monotonic() of the drill process."""

    config: dict[str, Any]  # what ran: replicas, clients, keys, seed, fault mix, ...
    started: float
    ended: float
    history: tuple[Op, ...]
    faults: tuple[Fault, ...]
    linearizability: LinearizabilityResult
    lost_writes: tuple[bytes, ...]  # acknowledged ledger writes missing at the end
    digests: dict[str, str]  # replica name -> digest of its tables at the end
    outages: tuple[FaultOutage, ...]
    notes: tuple[str, ...] = field(default=())  # anything the drill wants a reader to see
    # Ledger keys stored at the end that no call could have written (never sent, or FAIL).
    phantom_writes: tuple[bytes, ...] = field(default=())
    # Term -> replicas that served as leader in it (None: not checked, a remote drill).
    leaders: dict[int, tuple[str, ...]] | None = None

    @property
    def split_terms(self) -> dict[int, tuple[str, ...]]:
        """Terms in which more than one replica served as leader (Raft forbids it)."""
        return {t: names for t, names in (self.leaders or {}).items() if len(names) > 1}

    @property
    def divergent(self) -> bool:
        return len(set(self.digests.values())) > 1

    @property
    def passed(self) -> bool:
        return (
            self.linearizability.ok
            and not self.lost_writes
            and not self.phantom_writes
            and not self.divergent
            and not self.split_terms
            and bool(self.digests)
            and not any(f.error for f in self.faults)
        )
