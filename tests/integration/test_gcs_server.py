"""GcsServer's promotion and demotion with real in-process replicas (Raft + LMDB), and the
forwarder with real gRPC servers on loopback.

The managers here are recorders (they are what GcsServer drives, not what is tested);
GcsServer, the replicas, the store and the gRPC machinery are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer as AsyncHealthServicer

from gcs_ha.consensus.replica import RaftReplica
from gcs_ha.errors import InvalidRequestError
from gcs_ha.managers.manager import BackgroundTasks, GcsInitData
from gcs_ha.proto.ray import gcs_pb2
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.server import cluster_id as cid
from gcs_ha.server.forwarding import (
    FORWARDED_BY_KEY,
    Forwarder,
    ForwardingInterceptor,
    Kind,
    LeaderChannel,
    RoutingState,
    method_kind,
)
from gcs_ha.server.gcs_server import HEALTH_FORWARDING, HEALTH_OVERALL, GcsServer
from gcs_ha.server.status import NOT_APPLIED, not_applied
from gcs_ha.storage.tables import GcsTableStorage
from gcs_ha.testing.inprocess import InProcessCluster, replica_configs
from gcs_ha.testing.polling import until

RAFT_PORT, GCS_PORT = 10000, 10050  # this file uses 10000-10099
Events = list[tuple[str, str]]


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


class Recorder:
    """A manager that records its lifecycle into a shared list as (owner, event)."""

    def __init__(self, owner: str, name: str, events: Events) -> None:
        self.owner, self._name, self.events = owner, name, events
        self.init: GcsInitData | None = None
        self.tasks = BackgroundTasks(name)
        self.block: asyncio.Event | None = None  # start waits for it when set
        self.failures = 0  # start raises this many times first

    @property
    def name(self) -> str:
        return self._name

    async def start(self, init: GcsInitData) -> None:
        self.events.append((self.owner, f"{self._name}.start"))
        self.tasks.spawn(asyncio.sleep(3600), "idle")
        if self.failures:
            self.failures -= 1
            raise InvalidRequestError("refusing to start")
        if self.block is not None:
            try:
                await self.block.wait()
            except asyncio.CancelledError:
                self.events.append((self.owner, f"{self._name}.start-cancelled"))
                raise
        self.init = init

    async def stop(self) -> None:
        await self.tasks.cancel_all()
        self.events.append((self.owner, f"{self._name}.stop"))


class Rig(GcsServer):
    """A GcsServer with recorder managers and a hook that records serving, and handles on
    its managers and health servicer for the test."""

    def __init__(self, replica: RaftReplica, events: Events) -> None:
        self.health_servicer = AsyncHealthServicer()
        super().__init__(replica, self.health_servicer, replica.config.node_id, poll_s=0.02)
        node = replica.config.node_id
        self.recorders = [Recorder(node, name, events) for name in ("a", "b")]
        for manager in self.recorders:
            self.add_manager(manager)

        async def serving(init: GcsInitData) -> None:
            events.append((node, "serving"))
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                events.append((node, "hook-cancelled"))
                raise

        self.add_after_serving(serving)


async def health(gcs: Rig, service: str) -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    reply = await gcs.health_servicer.Check(request, None)
    return reply.status  # type: ignore[no-any-return]


async def until_health(gcs: Rig, service: str, want: int, timeout: float = 15.0) -> None:
    """Health follows the replica's status polls: wait for `service` to report `want`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while (got := await health(gcs, service)) != want:
        if loop.time() > end:
            raise AssertionError(f"{service or 'overall'} health is {got}, not {want}")
        await asyncio.sleep(0.02)


def of(events: Events, owner: str) -> list[str]:
    return [e for o, e in events if o == owner]


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_promotion_loads_tables_starts_in_order_then_serves(tmp_path: Path) -> None:
    async def main() -> None:
        async with InProcessCluster(replica_configs(tmp_path, 1, RAFT_PORT, GCS_PORT)) as c:
            replica = await c.leader()
            node = gcs_pb2.GcsNodeInfo(node_id=b"n" * 28, node_manager_address="10.0.0.1")
            await GcsTableStorage(replica.store).node_table.put(b"n" * 28, node)
            events: Events = []
            gcs = Rig(replica, events)
            assert await health(gcs, HEALTH_OVERALL) == SERVING  # the servicer's default
            await gcs.start()
            await until(gcs.is_serving)
            await until(lambda: len(of(events, "r0")) == 3)  # "serving" is recorded after
            assert of(events, "r0") == ["a.start", "b.start", "serving"]
            a, b = gcs.recorders
            assert a.init is not None and a.init.nodes == {b"n" * 28: node}
            assert b.init is a.init
            assert await health(gcs, HEALTH_OVERALL) == SERVING
            assert await health(gcs, HEALTH_FORWARDING) == SERVING

            kv = GcsTableStorage(replica.store).internal_kv
            stored = await kv.get(cid.CLUSTER_NAMESPACE, cid.CLUSTER_ID_KEY)
            assert stored is not None and len(stored) == cid.CLUSTER_ID_BYTES
            assert gcs.cluster_id.value == stored
            assert await kv.get(cid.AUTOSCALER_NAMESPACE, cid.AUTOSCALER_V2_KEY) == b"0"
            await until(lambda: gcs.serving_term is not None)
            for _ in range(100):
                if await kv.get(b"", cid.GCS_PID_KEY) == str(os.getpid()).encode():
                    break
                await asyncio.sleep(0.02)
            assert await kv.get(b"", cid.GCS_PID_KEY) == str(os.getpid()).encode()

            await gcs.stop()
            assert not gcs.is_serving()
            assert of(events, "r0")[3:] == ["hook-cancelled", "b.stop", "a.stop"]
            assert all(len(m.tasks) == 0 for m in gcs.recorders)
            assert await health(gcs, HEALTH_OVERALL) == NOT_SERVING

    run(main())


def test_leadership_moves_managers_with_it(tmp_path: Path) -> None:
    async def main() -> None:
        configs = replica_configs(tmp_path, 3, RAFT_PORT + 10, GCS_PORT + 10)
        async with InProcessCluster(configs) as c:
            events: Events = []
            servers = {r.config.node_id: Rig(r, events) for r in c.running()}
            for gcs in servers.values():
                await gcs.start()
            first = (await c.leader()).config.node_id
            await until(servers[first].is_serving)
            await asyncio.sleep(1.5)  # every replica registered its addresses
            other = next(n for n in servers if n != first)
            await servers[first].replica.transfer_leadership(other)
            await until(servers[other].is_serving)
            assert not servers[first].is_serving()
            await until(lambda: len(of(events, first)) == 6)
            assert of(events, first) == [
                "a.start", "b.start", "serving", "hook-cancelled", "b.stop", "a.stop",
            ]  # fmt: skip
            await until(lambda: len(of(events, other)) == 3)
            assert of(events, other) == ["a.start", "b.start", "serving"]
            assert servers[other].cluster_id.value == servers[first].cluster_id.value
            # The former leader sees the new one (within a status poll or two).
            await until(lambda: servers[first].routing.view.leader_node_id == other)
            assert servers[first].routing.view.address == configs[int(other[1:])].gcs_address
            await until_health(servers[first], HEALTH_FORWARDING, SERVING)
            assert await health(servers[first], HEALTH_OVERALL) == NOT_SERVING

            # And back: a replica is promoted again, with fresh init data, in a new term.
            await servers[other].replica.transfer_leadership(first)
            await until(servers[first].is_serving)
            await until(lambda: len(of(events, first)) == 9)
            assert of(events, first)[6:] == ["a.start", "b.start", "serving"]
            for gcs in servers.values():
                await gcs.stop()

    run(main())


def test_demotion_during_promotion_cancels_it(tmp_path: Path) -> None:
    async def main() -> None:
        configs = replica_configs(tmp_path, 3, RAFT_PORT + 20, GCS_PORT + 20)
        async with InProcessCluster(configs) as c:
            leader = await c.leader()
            await asyncio.sleep(1.5)  # every replica registered its addresses
            first = leader.config.node_id
            events: Events = []
            servers = {r.config.node_id: Rig(r, events) for r in c.running()}
            servers[first].recorders[1].block = asyncio.Event()  # b never finishes starting
            for gcs in servers.values():
                await gcs.start()
            await until(lambda: of(events, first) == ["a.start", "b.start"])
            other = next(n for n in servers if n != first)
            await leader.transfer_leadership(other)
            await until(servers[other].is_serving)
            await until(lambda: len(of(events, first)) == 5)
            assert of(events, first) == [
                "a.start", "b.start", "b.start-cancelled", "b.stop", "a.stop",
            ]  # fmt: skip
            assert not servers[first].is_serving()
            assert all(len(m.tasks) == 0 for m in servers[first].recorders)
            for gcs in servers.values():
                await gcs.stop()

    run(main())


def test_a_failed_start_is_undone_and_retried(tmp_path: Path) -> None:
    async def main() -> None:
        async with InProcessCluster(
            replica_configs(tmp_path, 1, RAFT_PORT + 30, GCS_PORT + 30)
        ) as c:
            replica = await c.leader()
            events: Events = []
            gcs = Rig(replica, events)
            gcs.recorders[1].failures = 1
            await gcs.start()
            assert not gcs.is_serving()
            await until(gcs.is_serving)
            await until(lambda: len(of(events, "r0")) == 7)  # "serving" is recorded after
            assert of(events, "r0") == [
                "a.start", "b.start", "b.stop", "a.stop", "a.start", "b.start", "serving",
            ]  # fmt: skip
            await gcs.stop()

    run(main())


# -- forwarding with real gRPC servers ----------------------------------------------------

LEADER, FOLLOWER = "127.0.0.1:10090", "127.0.0.1:10091"
NEXT_LEADER, THIRD_LEADER = "127.0.0.1:10092", "127.0.0.1:10093"


async def leader_echo_uu(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    md = dict(context.invocation_metadata() or ())
    context.set_trailing_metadata((("leader-trailer", "t"),))
    if request == b"fail":
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing", (("why", "because"),))
    remaining = context.time_remaining()
    who, by = str(md.get("who", "-")), str(md.get(FORWARDED_BY_KEY, "-"))
    deadline = b"deadline" if remaining is not None else b"none"
    return b"|".join([request, who.encode(), by.encode(), deadline])


async def leader_us(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for i in range(3):
        yield request + b"%d" % i


async def leader_su(requests: AsyncIterator[bytes], context: Any) -> bytes:
    return b"+".join([r async for r in requests])


async def leader_ss(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for r in requests:
        yield b"echo:" + r


# How many times the fake leader saw each of these, and what it answers: Del is refused
# once before it ran (NOT_APPLIED), Put, MultiGet, CreateActor and GcsSubscriberPoll are
# lost once after they may have run, Exists is a plain NOT_FOUND; then each is fine.
# GetAllActorInfo is always lost here (a dead leader); NEXT_LEADER answers it.
SEEN: dict[str, int] = {}
LOST_ONCE = ("InternalKVPut", "InternalKVMultiGet", "CreateActor", "GcsSubscriberPoll")
FLAKY = ("InternalKVDel", "InternalKVExists", "GetAllActorInfo", *LOST_ONCE)


async def leader_flaky(name: str, request: bytes, context: Any) -> bytes:
    SEEN[name] = SEEN.get(name, 0) + 1
    if name == "InternalKVDel" and SEEN[name] == 1:  # refused before it ran
        await context.abort(grpc.StatusCode.UNAVAILABLE, "not the leader", NOT_APPLIED)
    if name == "GetAllActorInfo" or (name in LOST_ONCE and SEEN[name] == 1):
        await context.abort(grpc.StatusCode.UNAVAILABLE, "leadership lost")
    if name == "InternalKVExists":
        await context.abort(grpc.StatusCode.NOT_FOUND, "nothing")
    return b"fine"


class LeaderHandlers(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    def service(self, details: grpc.HandlerCallDetails) -> Any:
        name = details.method.rsplit("/", 1)[1]
        if name in ("UU", "InternalKVGet"):
            return grpc.unary_unary_rpc_method_handler(leader_echo_uu)
        if name in FLAKY:
            return grpc.unary_unary_rpc_method_handler(functools.partial(leader_flaky, name))
        if name == "US":
            return grpc.unary_stream_rpc_method_handler(leader_us)
        if name == "SU":
            return grpc.stream_unary_rpc_method_handler(leader_su)
        if name in ("SS", "StartSync"):
            return grpc.stream_stream_rpc_method_handler(leader_ss)
        return None


class LocalKv(pb_grpc.InternalKVGcsServiceServicer):
    async def InternalKVGet(self, request: pb.InternalKVGetRequest, context: Any) -> Any:
        return pb.InternalKVGetReply(value=b"local:" + request.key)


class Routing:
    """Routing inputs the test sets by hand."""

    def __init__(self) -> None:
        self.serving = False
        self.is_self = False
        self.address: str | None = LEADER
        self.changed = asyncio.Event()

    def state(self) -> RoutingState:
        async def next_change(timeout: float) -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout)
            self.changed.clear()

        return RoutingState(
            lambda: self.serving, lambda: self.is_self, lambda: self.address,
            lambda: False, next_change,
        )  # fmt: skip


async def forwarding_pair(
    routing: Routing, after: Sequence[grpc.aio.ServerInterceptor] = ()
) -> tuple[grpc.aio.Server, grpc.aio.Server]:
    leader = grpc.aio.server()
    leader.add_generic_rpc_handlers([LeaderHandlers()])
    leader.add_insecure_port(LEADER)
    forwarder = Forwarder("f1", LeaderChannel())
    interceptor = ForwardingInterceptor(routing.state(), forwarder, lambda m: False, hold_s=1.0)

    # Every kind, straight through the forwarder.
    class Direct(grpc.GenericRpcHandler):  # type: ignore[type-arg]
        def service(self, details: grpc.HandlerCallDetails) -> Any:
            kinds = {"UU": Kind.UNARY_UNARY, "US": Kind.UNARY_STREAM,
                     "SU": Kind.STREAM_UNARY, "SS": Kind.STREAM_STREAM}  # fmt: skip
            kind = kinds.get(details.method.rsplit("/", 1)[1])
            return None if kind is None else forwarder.handler(kind, details.method, LEADER)

    follower = grpc.aio.server(interceptors=[interceptor, *after])
    follower.add_generic_rpc_handlers([Direct()])
    pb_grpc.add_InternalKVGcsServiceServicer_to_server(LocalKv(), follower)  # type: ignore[no-untyped-call]
    follower.add_insecure_port(FOLLOWER)
    await leader.start()
    await follower.start()
    return leader, follower


def test_a_lost_call_is_replayed_on_each_next_leader_not_the_lost_one() -> None:
    """A read lost with the leader waits for the routing to name the next leader and is
    replayed there; lost with that one too (a long poll can outlive a failover), it is
    replayed on the one after. Sent again at once to the old address it was lost a second
    time, and the caller got UNAVAILABLE (the one replay spent on a dead leader)."""

    def successor(name: str, lose_first: bool) -> grpc.aio.Server:
        async def handle(_request: bytes, context: Any) -> bytes:
            SEEN[name] = SEEN.get(name, 0) + 1
            if lose_first and SEEN[name] == 1:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "leadership lost")
            return b"fine"

        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(handle)
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("ray.rpc.ActorInfoGcsService",
                                                  {"GetAllActorInfo": handler})]
        )  # fmt: skip
        return server

    async def main() -> None:
        SEEN.clear()
        routing = Routing()
        leader, follower = await forwarding_pair(routing)
        second, third = successor("second", True), successor("third", False)
        second.add_insecure_port(NEXT_LEADER)
        third.add_insecure_port(THIRD_LEADER)
        await second.start()
        await third.start()

        async def elect(address: str) -> None:
            await asyncio.sleep(0.05)
            routing.changed.set()  # a refresh that still names the lost leader
            await asyncio.sleep(0.2)
            routing.address = address
            routing.changed.set()

        try:
            async with grpc.aio.insecure_channel(FOLLOWER) as ch:
                method = "/ray.rpc.ActorInfoGcsService/GetAllActorInfo"
                call = asyncio.ensure_future(ch.unary_unary(method, None, None)(b""))
                await elect(NEXT_LEADER)
                await elect(THIRD_LEADER)
                assert await call == b"fine"
            assert SEEN == {"GetAllActorInfo": 1, "second": 1, "third": 1}
        finally:
            for server in (third, second, follower, leader):
                await server.stop(None)

    run(main())


def test_forwarder_carries_every_kind_with_metadata_deadline_and_errors() -> None:
    async def main() -> None:
        leader, follower = await forwarding_pair(Routing())
        try:
            async with grpc.aio.insecure_channel(FOLLOWER) as ch:
                call = ch.unary_unary("/t.T/UU", None, None)(b"x", metadata=(("who", "me"),))
                assert await call == b"x|me|f1|none"
                trailing = [tuple(m) for m in await call.trailing_metadata() or ()]
                assert ("leader-trailer", "t") in trailing
                reply = await ch.unary_unary("/t.T/UU", None, None)(b"y", timeout=5)
                assert reply == b"y|-|f1|deadline"
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await ch.unary_unary("/t.T/UU", None, None)(b"fail")
                assert info.value.code() == grpc.StatusCode.NOT_FOUND
                assert info.value.details() == "no such thing"
                pairs: list[Any] = list(info.value.trailing_metadata())
                assert ("why", "because") in pairs
                us = ch.unary_stream("/t.T/US", None, None)(b"s")
                assert [r async for r in us] == [b"s0", b"s1", b"s2"]

                async def three() -> AsyncIterator[bytes]:
                    for r in (b"1", b"2", b"3"):
                        yield r

                assert await ch.stream_unary("/t.T/SU", None, None)(three()) == b"1+2+3"
                ss = ch.stream_stream("/t.T/SS", None, None)(three())
                assert [r async for r in ss] == [b"echo:1", b"echo:2", b"echo:3"]
        finally:
            await follower.stop(None)
            await leader.stop(None)

    run(main())


def test_interceptor_routes_rays_calls() -> None:
    async def main() -> None:
        routing = Routing()
        leader, follower = await forwarding_pair(routing)
        get = pb.InternalKVGetRequest(namespace=b"n", key=b"k")
        try:
            async with grpc.aio.insecure_channel(FOLLOWER) as ch:
                kv = pb_grpc.InternalKVGcsServiceStub(ch)  # type: ignore[no-untyped-call]
                raw = ch.unary_unary("/ray.rpc.InternalKVGcsService/InternalKVGet", None, None)
                # Not serving, leader known: forwarded (the fake leader echoes raw bytes).
                forwarded = await raw(get.SerializeToString())
                assert forwarded.startswith(get.SerializeToString() + b"|-|f1|")
                # Bidi RaySyncer through the interceptor (kind from the descriptors).
                assert method_kind("/ray.rpc.syncer.RaySyncer/StartSync") is Kind.STREAM_STREAM
                sync = ch.stream_stream("/ray.rpc.syncer.RaySyncer/StartSync", None, None)

                async def one() -> AsyncIterator[bytes]:
                    yield b"view"

                assert [r async for r in sync(one())] == [b"echo:view"]
                # A call that was already forwarded is never forwarded again.
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await kv.InternalKVGet(get, metadata=((FORWARDED_BY_KEY, "r9"),))
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                # No leader: held, then UNAVAILABLE.
                routing.address = None
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await kv.InternalKVGet(get)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                # Held while this replica is being promoted, answered here once it serves.
                routing.is_self = True
                pending = asyncio.ensure_future(kv.InternalKVGet(get, timeout=10))
                await asyncio.sleep(0.2)
                assert not pending.done()
                routing.serving = True
                routing.changed.set()
                assert (await pending).value == b"local:k"
                assert (await kv.InternalKVGet(get)).value == b"local:k"  # the fast path
        finally:
            await follower.stop(None)
            await leader.stop(None)

    run(main())


class DemoteWhileIntercepting(grpc.aio.ServerInterceptor):
    """Runs after the routing interceptor, before the handler: the replica stops serving
    between the two (as a demotion can while grpc.aio receives the request)."""

    def __init__(self, routing: Routing) -> None:
        self.routing = routing

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        self.routing.serving = False
        return await continuation(details)


def test_a_call_intercepted_while_serving_is_routed_again_when_its_handler_runs() -> None:
    async def main() -> None:
        routing = Routing()
        routing.serving = True
        leader, follower = await forwarding_pair(routing, [DemoteWhileIntercepting(routing)])
        get = pb.InternalKVGetRequest(namespace=b"n", key=b"k")
        try:
            async with grpc.aio.insecure_channel(FOLLOWER) as ch:
                raw = ch.unary_unary("/ray.rpc.InternalKVGcsService/InternalKVGet", None, None)
                # Not answered by this replica's (stopped) servicer: forwarded to the leader.
                reply = await raw(get.SerializeToString(), timeout=10)
                assert reply.startswith(get.SerializeToString() + b"|-|f1|")
        finally:
            await follower.stop(None)
            await leader.stop(None)

    run(main())


def test_only_calls_that_cannot_have_run_or_only_read_are_sent_again() -> None:
    """A refused call (NOT_APPLIED) is routed again; a write that may have run goes back as
    UNAVAILABLE (running it twice could break linearizability); a read, or a write keyed by
    the caller's own id (CreateActor, a subscriber's poll), is replayed once."""

    async def main() -> None:
        SEEN.clear()
        leader, follower = await forwarding_pair(Routing())
        try:
            async with grpc.aio.insecure_channel(FOLLOWER) as ch:

                def raw(name: str) -> Any:
                    method = f"/ray.rpc.InternalKVGcsService/{name}"
                    return ch.unary_unary(method, None, None)

                assert await raw("InternalKVDel")(b"") == b"fine"  # routed again
                assert await raw("InternalKVMultiGet")(b"") == b"fine"  # a read: replayed
                create = ch.unary_unary("/ray.rpc.ActorInfoGcsService/CreateActor", None, None)
                assert await create(b"") == b"fine"  # keyed by its actor id: replayed
                poll = "/ray.rpc.ControlPlanePubSubGcsService/GcsSubscriberPoll"
                assert await ch.unary_unary(poll, None, None)(b"") == b"fine"  # its subscriber's
                for name, code in (
                    ("InternalKVPut", grpc.StatusCode.UNAVAILABLE),
                    ("InternalKVExists", grpc.StatusCode.NOT_FOUND),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await raw(name)(b"")
                    assert info.value.code() == code
                    assert not not_applied(info.value.trailing_metadata())
                assert SEEN == {
                    "InternalKVDel": 2,
                    "InternalKVMultiGet": 2,
                    "CreateActor": 2,
                    "GcsSubscriberPoll": 2,
                    "InternalKVPut": 1,
                    "InternalKVExists": 1,
                }
        finally:
            await follower.stop(None)
            await leader.stop(None)

    run(main())


def test_wrong_cluster_id_is_refused_on_every_method_but_get_cluster_id() -> None:
    async def main() -> None:
        known = cid.ClusterId()
        known.learn(b"c" * 28)
        server = grpc.aio.server(interceptors=[cid.ClusterIdInterceptor(known)])
        pb_grpc.add_InternalKVGcsServiceServicer_to_server(LocalKv(), server)  # type: ignore[no-untyped-call]
        pb_grpc.add_NodeInfoGcsServiceServicer_to_server(cid.ClusterIdServicer(known), server)  # type: ignore[no-untyped-call]
        server.add_insecure_port(FOLLOWER)
        await server.start()
        get = pb.InternalKVGetRequest(key=b"k")
        try:
            async with grpc.aio.insecure_channel(FOLLOWER) as ch:
                kv = pb_grpc.InternalKVGcsServiceStub(ch)  # type: ignore[no-untyped-call]
                node = pb_grpc.NodeInfoGcsServiceStub(ch)  # type: ignore[no-untyped-call]
                wrong = (("ray_cluster_id", (b"d" * 28).hex()),)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await kv.InternalKVGet(get, metadata=wrong)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert info.value.details() == cid.WRONG_CLUSTER_ID
                right = (("ray_cluster_id", (b"c" * 28).hex()),)
                assert (await kv.InternalKVGet(get, metadata=right)).value == b"local:k"
                assert (await kv.InternalKVGet(get)).value == b"local:k"
                reply = await node.GetClusterId(pb.GetClusterIdRequest(), metadata=wrong)
                assert reply.cluster_id == b"c" * 28
        finally:
            await server.stop(None)

    run(main())


def test_cluster_id_never_changes_once_known() -> None:
    known = cid.ClusterId()
    with pytest.raises(Exception, match="28 bytes"):
        known.learn(b"short")
    known.learn(b"a" * 28)
    known.learn(b"a" * 28)
    with pytest.raises(Exception, match="differs"):
        known.learn(b"b" * 28)
    assert known.answers_locally(cid.GET_CLUSTER_ID)
    assert not known.answers_locally("/ray.rpc.InternalKVGcsService/InternalKVGet")
