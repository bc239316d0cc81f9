"""The runtime env manager (Ray's RuntimeEnvManager and the GCS's RuntimeEnvHandler):
reference counts on runtime env package URIs, held by jobs, actors and pins
(PinRuntimeEnvURI); an unreferenced `gcs://` package's KV key is deleted. Design and
failover rule: DESIGN.md, "Jobs, workers, task events, runtime envs".

Errors: `pin_uri` raises InvalidRequestError for an empty URI or a negative expiration.
Deletions run in background tasks; a failed deletion is logged (the package stays, as
in Ray).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from collections.abc import Iterable

from gcs_ha.errors import InvalidRequestError
from gcs_ha.managers.manager import BackgroundTasks, GcsInitData
from gcs_ha.proto.ray.runtime_env_pb2 import RuntimeEnvInfo
from gcs_ha.storage.internal_kv import InternalKv

log = logging.getLogger(__name__)

PACKAGE_NAMESPACE = b""  # where drivers upload packages (Ray's internal KV default)
GCS_PROTOCOL = "gcs"
RESTART_PIN_S = 600.0  # Ray's RAY_RUNTIME_ENV_URI_PIN_EXPIRATION_S default
RESTART_HOLDER = "gcs-restart"


def uris_of(info: RuntimeEnvInfo) -> list[str]:
    """The package URIs a runtime env refers to (working_dir, then py_modules)."""
    uris = [info.uris.working_dir_uri] if info.uris.working_dir_uri else []
    uris.extend(uri for uri in info.uris.py_modules_uris if uri)
    return uris


def protocol_of(uri: str) -> str | None:
    """`gcs` for `gcs://...`; None for a URI without `://`."""
    protocol, sep, _ = uri.partition("://")
    return protocol if sep else None


class RuntimeEnvManager:
    """Reference counts of runtime env URIs; deletes unreferenced `gcs://` packages."""

    def __init__(self, kv: InternalKv, *, restart_pin_s: float = RESTART_PIN_S) -> None:
        self._kv = kv
        self._restart_pin_s = restart_pin_s
        self._counts: Counter[str] = Counter()
        self._holders: dict[str, list[str]] = {}
        self._tasks = BackgroundTasks("runtime_env")

    @property
    def name(self) -> str:
        return "runtime_env"

    async def start(self, init: GcsInitData) -> None:
        """Start empty, then pin every URI the tables name for `restart_pin_s`."""
        self._clear()
        uris: list[str] = []
        for job in init.jobs.values():
            uris.extend(uris_of(job.config.runtime_env_info))
        for spec in init.actor_task_specs.values():
            uris.extend(uris_of(spec.runtime_env_info))
        if uris and self._restart_pin_s > 0:
            self._add(RESTART_HOLDER, sorted(set(uris)))
            self._tasks.spawn(self._expire(RESTART_HOLDER, self._restart_pin_s), "restart-pin")

    async def stop(self) -> None:
        await self._tasks.cancel_all()
        self._clear()

    # -- references ---------------------------------------------------------------------

    def add_uri_reference(self, holder: str, info: RuntimeEnvInfo) -> None:
        """`holder` (a job or actor hex id) references the URIs of `info`, replacing
        what it referenced before."""
        self._add(holder, uris_of(info))

    def remove_uri_reference(self, holder: str) -> None:
        """`holder` references nothing any more; URIs left without references are
        deleted in the background."""
        for uri in self._holders.pop(holder, []):
            self._release(uri)

    def pin_uri(self, uri: str, expiration_s: int) -> None:
        """Keep `uri` referenced for `expiration_s` seconds (PinRuntimeEnvURI)."""
        if not uri:
            raise InvalidRequestError("empty runtime env URI")
        if expiration_s < 0:
            raise InvalidRequestError(f"expiration_s must be >= 0, got {expiration_s}")
        holder = "pin:" + secrets.token_hex(6)
        self._add(holder, [uri])
        self._tasks.spawn(self._expire(holder, float(expiration_s)), "pin")

    def reference_count(self, uri: str) -> int:
        """How many holders reference `uri` now."""
        return self._counts[uri]

    def references_of(self, holder: str) -> list[str]:
        """The URIs `holder` references."""
        return list(self._holders.get(holder, []))

    # -- internals ----------------------------------------------------------------------

    def _add(self, holder: str, uris: Iterable[str]) -> None:
        new = list(uris)
        for uri in new:  # count the new ones first: a URI kept across the swap never drops
            self._counts[uri] += 1
        old = self._holders.get(holder, [])
        if new:
            self._holders[holder] = new
        else:
            self._holders.pop(holder, None)
        for uri in old:
            self._release(uri)

    def _release(self, uri: str) -> None:
        self._counts[uri] -= 1
        if self._counts[uri] > 0:
            return
        del self._counts[uri]
        if protocol_of(uri) == GCS_PROTOCOL:
            self._tasks.spawn(self._delete(uri), "delete-package")

    async def _expire(self, holder: str, after_s: float) -> None:
        await asyncio.sleep(after_s)
        self.remove_uri_reference(holder)

    async def _delete(self, uri: str) -> None:
        if self._counts[uri] > 0:  # referenced again before this task ran
            return
        deleted = await self._kv.delete(PACKAGE_NAMESPACE, uri.encode(), False)
        log.info("runtime env package %s unreferenced; deleted %d key(s)", uri, deleted)

    def _clear(self) -> None:
        self._counts.clear()
        self._holders.clear()
