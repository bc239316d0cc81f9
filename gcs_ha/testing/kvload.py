"""kvload: a load client over Ray's InternalKV protocol that records a history.

    with BackgroundLoad(LoadConfig(addresses=(...), writers=8)) as load:
        load.wait_acks(100, timeout=30)           # then kill -9 the leader, ...
    summary = summarize(load.history)             # acked keys, gaps, outages

Every call is an `Op` with outcome OK, FAIL or UNKNOWN (DESIGN.md, "The history load").

Errors raised: UnavailableError (no leader found in time, or a verification read that kept
failing until its deadline), GcsHaError for a domain error in a verification read. The load
itself never raises for RPC failures: they are outcomes in the history.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import os
import random
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Literal, Protocol

import grpc
import grpc.aio

from gcs_ha.errors import GcsHaError, UnavailableError
from gcs_ha.proto import admin_pb2, admin_pb2_grpc
from gcs_ha.proto.ray import gcs_service_pb2 as kv_pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as kv_grpc
from gcs_ha.ray_auth import load_ray_auth
from gcs_ha.ray_tls import aio_channel, process_ray_tls
from gcs_ha.server.status import RAY_NOT_FOUND, RAY_OK, not_applied

# Reconnect quickly to a restarted replica (gRPC's default backoff starts at 1 s).
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
)
_HINT = re.compile(r"leader at ([^\s;]+)")
_NEVER_PROPOSED = ("not the serving leader", "failed to connect", "connection refused")
READ_CHUNK = 1000

OpKind = Literal["put", "get", "del"]


class Outcome(enum.Enum):
    OK = "ok"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Op:
    """One call and what came of it (times are time.monotonic() in this process)."""

    client: int  # the writer that issued it (a "process" for a linearizability checker)
    kind: OpKind
    key: bytes
    value: bytes | None  # put: the value written; get: the value read (None: not found)
    start: float
    end: float
    outcome: Outcome
    address: str = ""  # the replica it was sent to
    result: int | None = None  # put: 1 if the key was new; del: keys deleted
    error: str = ""  # why it failed or is unknown
    overwrite: bool = True  # put: False = write only if the key is absent (added says if it did)


def classify(code: grpc.StatusCode, details: str, refused: bool = False) -> Outcome:
    """FAIL when the call certainly had no effect (`refused`: the replica said so with
    the NOT_APPLIED trailing metadata), else UNKNOWN (DESIGN.md)."""
    text = details.lower()
    if code == grpc.StatusCode.UNAVAILABLE and (refused or any(s in text for s in _NEVER_PROPOSED)):
        return Outcome.FAIL
    return Outcome.UNKNOWN


class KvClient:
    """InternalKV calls to the serving leader of a gcs-ha cluster. One asyncio loop only."""

    def __init__(
        self,
        seeds: Sequence[str],
        namespace: bytes = b"",
        call_timeout_s: float = 2.0,
        *,
        status_timeout_s: float = 0.5,
        backoff_s: float = 0.05,
        max_backoff_s: float = 0.1,
    ) -> None:
        self.namespace = namespace
        self.call_timeout_s = call_timeout_s
        self._status_timeout_s = status_timeout_s
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._known: list[str] = list(dict.fromkeys(seeds))
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._leader: str | None = None
        self._finding: asyncio.Task[str] | None = None
        # Ray's token and TLS when this process runs with them (gcs_ha.ray_auth, ray_tls).
        self._metadata = load_ray_auth(os.environ).metadata()
        self._tls = process_ray_tls()

    async def close(self) -> None:
        finding, self._finding = self._finding, None
        if finding is not None:
            finding.cancel()
            await asyncio.gather(finding, return_exceptions=True)
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()

    async def __aenter__(self) -> KvClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the leader ----------------------------------------------------------------------

    async def leader(self, timeout: float | None = None) -> str:
        """The serving leader's gRPC address (cached). UnavailableError after `timeout`."""
        if self._leader is not None:
            return self._leader
        if self._finding is None or self._finding.done():
            self._finding = asyncio.get_running_loop().create_task(self._find_leader())
        try:
            return await asyncio.wait_for(asyncio.shield(self._finding), timeout)
        except TimeoutError:
            raise UnavailableError(f"no serving leader found in {timeout} s") from None

    @property
    def known(self) -> tuple[str, ...]:
        """Every replica address this client knows (the seeds and the members learned)."""
        return tuple(self._known)

    def forget_leader(self, address: str, details: str = "") -> None:
        """A call to `address` failed: follow the hint in `details`, or rediscover."""
        if self._leader != address:
            return
        hint = _HINT.search(details)
        self._leader = hint.group(1) if hint and hint.group(1) != address else None

    async def _find_leader(self) -> str:
        delay = self._backoff_s
        while True:
            addresses = list(self._known)
            answers = await asyncio.gather(*(self._status(a) for a in addresses))
            best: tuple[int, str] | None = None
            for address, status in zip(addresses, answers, strict=True):
                if status is None:
                    continue
                for member in status.members:
                    if member.gcs_address and member.gcs_address not in self._known:
                        self._known.append(member.gcs_address)
                if status.serving and (best is None or status.term > best[0]):
                    best = (status.term, address)
            if best is not None:
                self._leader = best[1]
                return best[1]
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_backoff_s)

    async def _status(self, address: str) -> admin_pb2.ReplicaStatus | None:
        stub = admin_pb2_grpc.AdminServiceStub(self._channel(address))  # type: ignore[no-untyped-call]
        try:
            status: admin_pb2.ReplicaStatus = await stub.Status(
                admin_pb2.StatusRequest(), timeout=self._status_timeout_s
            )
        except grpc.aio.AioRpcError:
            return None
        return status

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = aio_channel(address, self._tls, CHANNEL_OPTIONS)
            self._channels[address] = channel
        return channel

    def _kv(self, address: str) -> Any:
        return kv_grpc.InternalKVGcsServiceStub(self._channel(address))  # type: ignore[no-untyped-call]

    # -- one call, one Op ----------------------------------------------------------------

    async def put(self, key: bytes, value: bytes, overwrite: bool = True, client: int = 0) -> Op:
        request = kv_pb.InternalKVPutRequest(
            namespace=self.namespace, key=key, value=value, overwrite=overwrite
        )
        return await self._op(
            client,
            "put",
            key,
            value=value,
            method="InternalKVPut",
            request=request,
            overwrite=overwrite,
        )

    async def get(self, key: bytes, client: int = 0, via: str | None = None) -> Op:
        """A read; `via` sends it to that replica (a follower forwards it to the leader)
        instead of to the leader, or to the leader when `via` cannot be reached."""
        request = kv_pb.InternalKVGetRequest(namespace=self.namespace, key=key)
        op = await self._op(
            client, "get", key, value=None, method="InternalKVGet", request=request, via=via
        )
        if via is None or op.outcome is not Outcome.FAIL or "failed to connect" not in op.error:
            return op
        # `via` is down (a killed or departed replica): the read never left this client.
        # Ask the leader instead, as a client given several addresses would.
        again = await self._op(
            client, "get", key, value=None, method="InternalKVGet", request=request
        )
        return replace(again, start=op.start)

    async def delete(self, key: bytes, client: int = 0) -> Op:
        request = kv_pb.InternalKVDelRequest(namespace=self.namespace, key=key)
        return await self._op(
            client, "del", key, value=None, method="InternalKVDel", request=request
        )

    async def _op(
        self,
        client: int,
        kind: OpKind,
        key: bytes,
        *,
        value: bytes | None,
        method: str,
        request: Any,
        overwrite: bool = True,
        via: str | None = None,
    ) -> Op:
        """One RPC to the leader (or to `via`). Finding the leader is not part of the Op:
        UnavailableError when none is found within the call deadline (nothing was sent)."""
        address = via or await self.leader(self.call_timeout_s)
        start = time.monotonic()

        def done(
            outcome: Outcome, got: bytes | None, result: int | None = None, error: str = ""
        ) -> Op:
            end = time.monotonic()
            return Op(
                client, kind, key, got, start, end, outcome, address, result, error, overwrite
            )

        try:
            reply = await getattr(self._kv(address), method)(
                request, timeout=self.call_timeout_s, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or ""
            if via is None:
                self.forget_leader(address, details)
            outcome = classify(exc.code(), details, not_applied(exc.trailing_metadata()))
            return done(outcome, value, error=f"{exc.code().name}: {details}")
        code, message = reply.status.code, reply.status.message
        if kind == "get" and code == RAY_NOT_FOUND:
            return done(Outcome.OK, None)
        if code != RAY_OK:
            return done(Outcome.FAIL, value, error=f"ray status {code}: {message}")
        if kind == "get":
            return done(Outcome.OK, reply.value)
        result = int(reply.added) if kind == "put" else int(reply.deleted_num)
        return done(Outcome.OK, value, result)

    # -- verification reads (retried until a deadline) -----------------------------------

    async def read_all(self, prefix: bytes = b"", deadline_s: float = 30.0) -> dict[bytes, bytes]:
        """Every key of the namespace under `prefix` with its value, read through the
        leader (InternalKVKeys, then InternalKVMultiGet in chunks). Linearizable reads."""
        end = time.monotonic() + deadline_s
        request = kv_pb.InternalKVKeysRequest(namespace=self.namespace, prefix=prefix)
        keys = list((await self._retrying("InternalKVKeys", request, end)).results)
        out: dict[bytes, bytes] = {}
        for i in range(0, len(keys), READ_CHUNK):
            chunk = kv_pb.InternalKVMultiGetRequest(
                namespace=self.namespace, keys=keys[i : i + READ_CHUNK]
            )
            reply = await self._retrying("InternalKVMultiGet", chunk, end)
            out.update((entry.key, entry.value) for entry in reply.results)
        return out

    async def _retrying(self, method: str, request: Any, end: float) -> Any:
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise UnavailableError(f"{method} did not succeed before its deadline")
            address = await self.leader(remaining)
            try:
                reply = await getattr(self._kv(address), method)(
                    request,
                    timeout=min(self.call_timeout_s * 5, remaining),
                    metadata=self._metadata,
                )
            except grpc.aio.AioRpcError as exc:
                self.forget_leader(address, exc.details() or "")
                await asyncio.sleep(self._backoff_s)
                continue
            if reply.status.code != RAY_OK:
                raise GcsHaError(f"{method}: ray status {reply.status.code}")
            return reply


# -- the load ---------------------------------------------------------------------------


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class LoadConfig:
    """What the writers do. key_space 0: every write goes to a key of its own
    (prefix + writer + sequence number), else keys are drawn from `key_space` keys and
    `read_ratio` of the calls are reads. Values are unique per call in both modes."""

    addresses: tuple[str, ...]
    writers: int = 8
    namespace: bytes = b"kvload"
    key_prefix: bytes = b"k"
    key_space: int = 0
    read_ratio: float = 0.0
    value_bytes: int = 0  # pad values to at least this size
    call_timeout_s: float = 2.0
    interval_s: float = 0.0  # pause between two calls of a writer
    seed: int = 0


class KvLoad:
    """W concurrent writers over one KvClient; the history is kept in `history`."""

    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self.history: list[Op] = []
        self.acks = 0  # acknowledged writes so far (safe to read from another thread)

    async def run(self, stop: StopFlag) -> list[Op]:
        """Run the writers until `stop.is_set()`; returns the history."""
        cfg = self.config
        async with KvClient(cfg.addresses, cfg.namespace, cfg.call_timeout_s) as client:
            await asyncio.gather(*(self._writer(client, w, stop) for w in range(cfg.writers)))
        return self.history

    async def _writer(self, client: KvClient, w: int, stop: StopFlag) -> None:
        cfg = self.config
        rng = random.Random(cfg.seed * 1_000_003 + w)
        seq = 0
        while not stop.is_set():
            try:
                await client.leader(timeout=0.5)
                op = await self._call(client, w, seq, rng)
            except UnavailableError:
                continue  # no leader found: nothing was sent
            self.history.append(op)
            if op.outcome is Outcome.OK and op.kind != "get":
                self.acks += 1
            seq += 1
            pause = cfg.interval_s if op.outcome is Outcome.OK else 0.05
            if pause:
                await asyncio.sleep(pause)

    async def _call(self, client: KvClient, w: int, seq: int, rng: random.Random) -> Op:
        cfg = self.config
        value = b"%d.%d." % (w, seq)
        value += b"v" * max(0, cfg.value_bytes - len(value))
        if not cfg.key_space:
            return await client.put(cfg.key_prefix + b"%02d-%08d" % (w, seq), value, client=w)
        key = cfg.key_prefix + b"%06d" % rng.randrange(cfg.key_space)
        if rng.random() < cfg.read_ratio:
            return await client.get(key, client=w)
        return await client.put(key, value, client=w)


class Load(Protocol):
    """A load that runs on an event loop until told to stop (KvLoad, drill.DrillLoad)."""

    history: list[Op]
    acks: int

    async def run(self, stop: StopFlag) -> list[Op]: ...


class BackgroundLoad:
    """A load (a KvLoad for a LoadConfig) in a thread of its own with its own event loop,
    for synchronous drills."""

    def __init__(self, load: LoadConfig | Load) -> None:
        self.load: Load = KvLoad(load) if isinstance(load, LoadConfig) else load
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="kvload", daemon=True)

    @property
    def acks(self) -> int:
        return self.load.acks

    @property
    def history(self) -> list[Op]:
        return self.load.history

    def start(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def _main(self) -> None:
        try:
            asyncio.run(self.load.run(self._stop))
        except BaseException as exc:
            self._error = exc

    def alive(self) -> bool:
        """Whether the load still runs (it has not stopped or failed)."""
        return self._thread.is_alive() and self._error is None

    def wait_acks(self, count: int, timeout: float) -> None:
        """Wait until at least `count` writes were acknowledged in all (UnavailableError)."""
        end = time.monotonic() + timeout
        while self.load.acks < count:
            if self._error is not None or not self._thread.is_alive():
                raise UnavailableError(f"the load stopped: {self._error!r}")
            if time.monotonic() >= end:
                raise UnavailableError(f"{self.load.acks} of {count} writes acknowledged")
            time.sleep(0.02)

    def stop(self, timeout: float = 60.0) -> list[Op]:
        """Stop the writers (each finishes its call) and return the history."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._error is not None:
            raise self._error
        return self.load.history

    def __enter__(self) -> BackgroundLoad:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(60.0)


# -- what a history says ----------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A time span (time.monotonic()) during which no write was acknowledged."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class LoadSummary:
    ops: int
    acked: int  # acknowledged writes
    failed: int
    unknown: int
    acked_keys: frozenset[bytes]
    max_ack_gap_s: float  # largest gap between two consecutive acknowledgements
    outages: tuple[Window, ...]  # gaps longer than the threshold


def is_ack(op: Op) -> bool:
    return op.outcome is Outcome.OK and op.kind != "get"


def ack_times(history: Sequence[Op]) -> list[float]:
    """Completion times of the acknowledged writes, sorted."""
    return sorted(op.end for op in history if is_ack(op))


def summarize(history: Sequence[Op], outage_threshold_s: float = 0.5) -> LoadSummary:
    times = ack_times(history)
    gaps = [Window(a, b) for a, b in itertools.pairwise(times)]
    return LoadSummary(
        ops=len(history),
        acked=len(times),
        failed=sum(op.outcome is Outcome.FAIL for op in history),
        unknown=sum(op.outcome is Outcome.UNKNOWN for op in history),
        acked_keys=frozenset(op.key for op in history if is_ack(op) and op.kind == "put"),
        max_ack_gap_s=max((g.duration for g in gaps), default=0.0),
        outages=tuple(g for g in gaps if g.duration > outage_threshold_s),
    )


def max_gap_between(history: Sequence[Op], start: float, end: float) -> float:
    """The largest time without an acknowledgement within [start, end]."""
    times = [start, *(t for t in ack_times(history) if start < t < end), end]
    return max(b - a for a, b in itertools.pairwise(times))


def outage_around(history: Sequence[Op], t: float) -> Window | None:
    """The outage a client saw around `t` (e.g. a kill -9 of the leader): from the last
    acknowledgement completed before `t` to the first acknowledgement of a call made after
    `t`. (Replies that were already on their way when the leader died arrive after `t` but
    say nothing about the new leader, so they do not end the outage.) None if either side
    has no acknowledgement."""
    before = [op.end for op in history if is_ack(op) and op.end <= t]
    after = [op.end for op in history if is_ack(op) and op.start > t]
    return Window(max(before), min(after)) if before and after else None


@dataclass(frozen=True)
class WriteCheck:
    """Stored state against a unique-key history (every put wrote a key of its own)."""

    acked: int
    lost: tuple[bytes, ...]  # acknowledged, but missing or holding another value
    phantom: tuple[bytes, ...]  # stored, but never written or certainly not applied
    unknown_applied: int  # writes of unknown outcome that did take effect (allowed)

    @property
    def ok(self) -> bool:
        return not self.lost and not self.phantom


def check_unique_writes(history: Sequence[Op], stored: Mapping[bytes, bytes]) -> WriteCheck:
    """Compare what is stored (every key under the load's prefix) with the history."""
    puts = {op.key: op for op in history if op.kind == "put"}
    acked = [op for op in puts.values() if op.outcome is Outcome.OK]
    lost = sorted(op.key for op in acked if stored.get(op.key) != op.value)
    phantom = sorted(
        key
        for key, value in stored.items()
        if key not in puts or puts[key].outcome is Outcome.FAIL or puts[key].value != value
    )
    unknown_applied = sum(
        op.outcome is Outcome.UNKNOWN and stored.get(op.key) == op.value for op in puts.values()
    )
    return WriteCheck(len(acked), tuple(lost), tuple(phantom), unknown_applied)
