"""The internal KV manager (Ray's GcsInternalKVManager): Ray's namespaced key-value calls,
the system config (GetInternalConfig) and its config listeners, and the periodic sweep
of unnamed large-value chunks. Details: DESIGN.md, "Module notes".

Errors: NotFoundError (Get of a missing key), InvalidRequestError (an empty key, or a key
or value over the limits), and whatever the store raises (NotLeaderError, ...).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from gcs_ha.errors import GcsHaError, InvalidRequestError, NotFoundError
from gcs_ha.managers.manager import BackgroundTasks, GcsInitData
from gcs_ha.storage.internal_kv import InternalKv

SYSTEM_CONFIG_NAMESPACE = b"gcs_ha"
SYSTEM_CONFIG_KEY = b"system_config"
EMPTY_CONFIG = "{}"
SWEEP_INTERVAL_S = 30.0
ConfigListener = Callable[[dict[str, Any]], None]
log = logging.getLogger(__name__)


class KvManager:
    """Serves the InternalKV calls over the replicated KV table. Keeps no state of its
    own: every call goes to the table (with the store's read barrier). Its one background
    task sweeps unnamed chunks of large values."""

    name = "internal_kv"

    def __init__(self, kv: InternalKv) -> None:
        self._kv = kv
        self._config_listeners: list[ConfigListener] = []
        self._tasks = BackgroundTasks(self.name)

    def add_config_listener(self, listener: ConfigListener) -> None:
        """Call `listener` with the head's system config (a dict) now and on every change."""
        self._config_listeners.append(listener)

    async def start(self, init: GcsInitData) -> None:
        """Hand the stored system config to the listeners, start the chunk sweeper."""
        self._notify(await self.internal_config())
        self._tasks.spawn(self._sweep_chunks(), "sweep-chunks")

    async def stop(self) -> None:
        """Stop the chunk sweeper."""
        await self._tasks.cancel_all()

    async def _sweep_chunks(self) -> None:
        while True:
            try:
                removed = await self._kv.large_values.sweep()
            except GcsHaError as exc:  # stepping down, or a disk error: try again later
                log.warning("sweeping unnamed chunks of large KV values failed: %s", exc)
            else:
                if removed:
                    log.info("swept %d unnamed chunk groups of large KV values", removed)
            await asyncio.sleep(SWEEP_INTERVAL_S)

    async def get(self, namespace: bytes, key: bytes) -> bytes:
        _check_key(key)
        value = await self._kv.get(namespace, key)
        if value is None:
            raise NotFoundError("Failed to find the key")
        return value

    async def multi_get(self, namespace: bytes, keys: list[bytes]) -> dict[bytes, bytes]:
        for key in keys:
            _check_key(key)
        return await self._kv.multi_get(namespace, keys)

    async def put(self, namespace: bytes, key: bytes, value: bytes, overwrite: bool) -> bool:
        _check_key(key)
        added = await self._kv.put(namespace, key, value, overwrite)
        if (namespace, key) == (SYSTEM_CONFIG_NAMESPACE, SYSTEM_CONFIG_KEY) and (
            added or overwrite
        ):
            self._notify(value.decode("utf-8", errors="replace"))  # what is stored now
        return added

    async def delete(self, namespace: bytes, key: bytes, by_prefix: bool) -> int:
        if not by_prefix:
            _check_key(key)
        return await self._kv.delete(namespace, key, by_prefix)

    async def exists(self, namespace: bytes, key: bytes) -> bool:
        _check_key(key)
        return await self._kv.exists(namespace, key)

    async def keys(self, namespace: bytes, prefix: bytes) -> list[bytes]:
        return await self._kv.keys(namespace, prefix)

    async def internal_config(self) -> str:
        """The system config JSON handed to raylets (GetInternalConfig): the head node's,
        as its launcher stored it, or "{}" when none was stored."""
        value = await self._kv.get(SYSTEM_CONFIG_NAMESPACE, SYSTEM_CONFIG_KEY)
        if value is None:
            return EMPTY_CONFIG
        return value.decode("utf-8", errors="replace")

    def _notify(self, text: str) -> None:
        config = parse_system_config(text)
        for listener in self._config_listeners:
            listener(config)


def parse_system_config(text: str) -> dict[str, Any]:
    """The head's system config as a dict ({} when it is not a JSON object)."""
    try:
        config = json.loads(text)
    except ValueError:
        log.warning("the stored system config is not JSON; using the defaults")
        return {}
    return config if isinstance(config, dict) else {}


def _check_key(key: bytes) -> None:
    if not key:
        raise InvalidRequestError("empty key")
