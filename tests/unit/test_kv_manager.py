"""KvManager over a real in-memory store: the system config served by GetInternalConfig."""

from __future__ import annotations

import asyncio
import json

from gcs_ha.managers.kv_manager import SYSTEM_CONFIG_KEY, SYSTEM_CONFIG_NAMESPACE, KvManager
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.storage.internal_kv import InternalKv
from gcs_ha.storage.memory import InMemoryStoreClient


def test_internal_config_is_empty_until_a_head_stored_one() -> None:
    async def scenario() -> None:
        kv = InternalKv(InMemoryStoreClient())
        manager = KvManager(kv)
        assert await manager.internal_config() == "{}"
        config = {"automatic_object_spilling_enabled": True, "object_spilling_config": "{}"}
        await kv.put(SYSTEM_CONFIG_NAMESPACE, SYSTEM_CONFIG_KEY, json.dumps(config).encode())
        assert json.loads(await manager.internal_config()) == config

    asyncio.run(scenario())


def test_internal_config_is_a_ray_kv_key_like_any_other() -> None:
    # The head's launcher writes it with Ray's own InternalKVPut, as the manager's put does.
    async def scenario() -> None:
        manager = KvManager(InternalKv(InMemoryStoreClient()))
        await manager.put(SYSTEM_CONFIG_NAMESPACE, SYSTEM_CONFIG_KEY, b'{"a": 1}', True)
        assert await manager.internal_config() == '{"a": 1}'
        assert await manager.get(SYSTEM_CONFIG_NAMESPACE, SYSTEM_CONFIG_KEY) == b'{"a": 1}'

    asyncio.run(scenario())


def test_config_listeners_hear_the_stored_config_and_every_new_one() -> None:
    """Managers that take settings from the head's system config get it when the KV
    manager starts leading and whenever the head stores it."""

    async def scenario() -> None:
        kv = InternalKv(InMemoryStoreClient())
        await kv.put(SYSTEM_CONFIG_NAMESPACE, SYSTEM_CONFIG_KEY, b'{"health_check_period_ms": 7}')
        manager = KvManager(kv)
        heard: list[dict[str, object]] = []
        manager.add_config_listener(heard.append)
        await manager.start(GcsInitData())
        await manager.put(b"other", SYSTEM_CONFIG_KEY, b'{"x": 1}', True)  # not the config
        await manager.put(SYSTEM_CONFIG_NAMESPACE, SYSTEM_CONFIG_KEY, b"[1, 2]", True)
        await manager.put(SYSTEM_CONFIG_NAMESPACE, SYSTEM_CONFIG_KEY, b"not json", True)
        assert heard == [{"health_check_period_ms": 7}, {}, {}]

    asyncio.run(scenario())
