"""The drill's client load: Ray's InternalKV calls on a small, rotating key space.

Concurrent clients, each with its own KvClient, loop over a random mix of get, put, cas-put,
del and write-once ledger puts; reads go to any replica, writes to the leader. The key
rotation and the reasons are in DESIGN.md ("The load").
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from gcs_ha.errors import UnavailableError
from gcs_ha.testing.kvload import KvClient, Op, Outcome, StopFlag

REGISTER_PREFIX = b"r"
LEDGER_PREFIX = b"l"
DEFAULT_MIX = (("get", 0.45), ("put", 0.22), ("cas", 0.13), ("del", 0.10), ("ledger", 0.10))


@dataclass(frozen=True)
class WorkloadConfig:
    addresses: tuple[str, ...]
    clients: int = 8
    keys: int = 8  # register keys active at a time
    ops_per_key: int = 200  # a slot moves to a fresh key after this many operations
    mix: tuple[tuple[str, float], ...] = DEFAULT_MIX
    namespace: bytes = b"drill"
    call_timeout_s: float = 2.0
    seed: int = 0


@dataclass
class _Keys:
    """The rotating register key space (one event loop: no locking)."""

    slots: int
    ops_per_key: int
    generation: list[int] = field(default_factory=list)
    count: list[int] = field(default_factory=list)
    next_generation: int = 0
    used: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        for _ in range(self.slots):
            self.generation.append(self._fresh())
            self.count.append(0)

    def _fresh(self) -> int:
        self.next_generation += 1
        key = b"%s%06d" % (REGISTER_PREFIX, self.next_generation)
        self.used.append(key)
        return self.next_generation

    def pick(self, rng: random.Random) -> bytes:
        slot = rng.randrange(self.slots)
        key = b"%s%06d" % (REGISTER_PREFIX, self.generation[slot])
        self.count[slot] += 1
        if self.count[slot] >= self.ops_per_key:
            self.generation[slot], self.count[slot] = self._fresh(), 0
        return key


class DrillLoad:
    """The clients; `history` grows as operations complete (read it after `stop`)."""

    def __init__(self, config: WorkloadConfig) -> None:
        self.config = config
        self.history: list[Op] = []
        self.acks = 0
        self.keys = _Keys(config.keys, config.ops_per_key)
        self._kinds = [k for k, _ in config.mix]
        self._weights = [w for _, w in config.mix]

    async def run(self, stop: StopFlag) -> list[Op]:
        cfg = self.config
        clients = [
            KvClient(cfg.addresses, cfg.namespace, cfg.call_timeout_s) for _ in range(cfg.clients)
        ]
        try:
            await asyncio.gather(*(self._client(c, i, stop) for i, c in enumerate(clients)))
        finally:
            for client in clients:
                await client.close()
        return self.history

    async def _client(self, client: KvClient, i: int, stop: StopFlag) -> None:
        rng = random.Random(self.config.seed * 1_000_003 + i)
        seq = 0
        while not stop.is_set():
            try:
                op = await self._call(client, i, seq, rng)
            except UnavailableError:
                await asyncio.sleep(0.02)  # no leader found: nothing was sent
                continue
            self.history.append(op)
            if op.outcome is Outcome.OK and op.kind != "get":
                self.acks += 1
            seq += 1
            if op.outcome is not Outcome.OK:
                await asyncio.sleep(0.02)

    async def _call(self, client: KvClient, i: int, seq: int, rng: random.Random) -> Op:
        kind = rng.choices(self._kinds, self._weights)[0]
        value = b"%d.%d" % (i, seq)
        if kind == "ledger":
            return await client.put(b"%s%02d-%08d" % (LEDGER_PREFIX, i, seq), value, client=i)
        key = self.keys.pick(rng)
        if kind == "get":
            via = rng.choice(client.known)
            return await client.get(key, client=i, via=via)
        if kind == "del":
            return await client.delete(key, client=i)
        return await client.put(key, value, overwrite=kind == "put", client=i)


async def final_reads(
    addresses: Sequence[str], namespace: bytes, keys: Sequence[bytes], deadline_s: float = 60.0
) -> tuple[list[Op], dict[bytes, bytes]]:
    """After the load: one linearizable read of every register key (as get ops of client
    -1, to be checked with the history) and every ledger key with its value."""
    async with KvClient(addresses, namespace) as client:
        start = time.monotonic()
        registers = await client.read_all(REGISTER_PREFIX, deadline_s)
        end = time.monotonic()
        ledger = await client.read_all(LEDGER_PREFIX, deadline_s)
    ops = [Op(-1, "get", key, registers.get(key), start, end, Outcome.OK) for key in keys]
    return ops, ledger
