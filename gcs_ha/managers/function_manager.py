"""The function manager (Ray's GcsFunctionManager): drops a job's exported code (internal
KV namespace `fun`) once nothing of the job can run any more. Holders per job are the
driver (`DRIVER`) and each detached actor; `collect_garbage` removes code a previous
leader left behind. Design: DESIGN.md, "Jobs, workers, task events, runtime envs".

Errors: whatever the store raises for the KV deletions (UnavailableError, NotLeaderError,
UnknownOutcomeError, ...); a holder released before the deletion failed is not re-added,
`collect_garbage` in a later term finds the keys again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from gcs_ha.managers.manager import GcsInitData
from gcs_ha.storage.internal_kv import InternalKv

log = logging.getLogger(__name__)

FUN_NAMESPACE = b"fun"
# The kinds of exported code, as the prefix of their keys (Ray's gcs_function_manager.h;
# "FunctionsToRun" is Ray's kWorkerSetupHookKeyName).
KEY_KINDS = (b"RemoteFunction", b"ActorClass", b"FunctionsToRun")
KEY_SEP = b":"
DRIVER = b"driver"  # the holder a job's driver stands for


def job_prefixes(job_id: bytes) -> list[bytes]:
    """The `fun` key prefixes of everything `job_id` exported."""
    job_hex = bytes(job_id).hex().encode()
    return [kind + KEY_SEP + job_hex + KEY_SEP for kind in KEY_KINDS]


def job_hex_of(key: bytes) -> bytes | None:
    """The job hex of a `fun` key of a known kind, or None."""
    kind, sep, rest = key.partition(KEY_SEP)
    if kind not in KEY_KINDS or not sep:
        return None
    job_hex, sep, _ = rest.partition(KEY_SEP)
    return job_hex if sep else None


class FunctionManager:
    """Holders per job; deletes the job's `fun` keys when the last holder goes."""

    def __init__(self, kv: InternalKv) -> None:
        self._kv = kv
        self._holders: dict[bytes, set[bytes]] = {}

    @property
    def name(self) -> str:
        return "function"

    async def start(self, init: GcsInitData) -> None:
        """Forget every holder: the job and actor managers add theirs in their start."""
        self._holders.clear()

    async def stop(self) -> None:
        self._holders.clear()

    def add_job_reference(self, job_id: bytes, holder: bytes = DRIVER) -> None:
        """`holder` (the driver, or a detached actor's id) keeps `job_id`'s code."""
        self._holders.setdefault(bytes(job_id), set()).add(bytes(holder))

    def is_referenced(self, job_id: bytes) -> bool:
        """Whether anyone holds `job_id`."""
        return bool(self._holders.get(bytes(job_id)))

    async def remove_job_reference(self, job_id: bytes, holder: bytes = DRIVER) -> bool:
        """Release `holder`'s hold; when it was the last, delete the job's keys.
        True when the keys were deleted now; a holder never added changes nothing."""
        job_id = bytes(job_id)
        holders = self._holders.get(job_id)
        if holders is None or bytes(holder) not in holders:
            return False
        holders.discard(bytes(holder))
        if holders:
            return False
        del self._holders[job_id]
        await self.remove_exported_functions(job_id)
        return True

    async def remove_exported_functions(self, job_id: bytes) -> int:
        """Delete every `fun` key of `job_id` (three prefix deletions, concurrently so
        that they share a replicated write); how many keys went."""
        counts = await asyncio.gather(
            *(self._kv.delete(FUN_NAMESPACE, prefix, True) for prefix in job_prefixes(job_id))
        )
        deleted = sum(counts)
        log.debug("removed %d exported functions of job %s", deleted, bytes(job_id).hex())
        return deleted

    async def collect_garbage(self, finished_jobs: Iterable[bytes]) -> int:
        """Delete the leftover keys of finished jobs that nobody holds (one read of the
        `fun` key list; deletions only for jobs that have keys). How many keys went."""
        finished = {
            bytes(job).hex().encode(): bytes(job)
            for job in finished_jobs
            if not self.is_referenced(job)
        }
        if not finished:
            return 0
        keys = await self._kv.keys(FUN_NAMESPACE, b"")
        doomed = {finished[h] for key in keys if (h := job_hex_of(key)) in finished}
        counts = await asyncio.gather(*(self.remove_exported_functions(j) for j in doomed))
        if doomed:
            log.info("removed leftover exported functions of %d finished jobs", len(doomed))
        return sum(counts)
