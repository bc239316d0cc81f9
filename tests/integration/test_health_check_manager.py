"""HealthCheckManager against real grpc.aio health servers on loopback.

The servers stand in for raylets (grpc.health.v1 Check with service = node id hex); the
health-check manager is what is tested. Periods are short (tens of ms) and every wait
has a generous deadline: the tests assert outcomes, never speed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from gcs_ha.managers.health_check_manager import HealthCheckManager
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo
from gcs_ha.server.clients.raylets import GrpcRayletClientPool
from gcs_ha.testing.fake_raylet import FakeRaylet
from gcs_ha.testing.polling import until

_ports = itertools.count(13000)  # this file: 13000-13099
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
WAIT_S = 10.0  # deadline for something that should happen within a few periods


def node_info(n: int, port: int) -> GcsNodeInfo:
    return GcsNodeInfo(
        node_id=bytes([n]) * 28, node_manager_address="127.0.0.1", node_manager_port=port
    )


class Deaths:
    """The death handler: records node ids, lets a test wait for one."""

    def __init__(self) -> None:
        self.ids: list[bytes] = []
        self._event = asyncio.Event()

    async def __call__(self, node_id: bytes) -> None:
        self.ids.append(node_id)
        self._event.set()

    async def wait(self, timeout: float = WAIT_S) -> None:
        await asyncio.wait_for(self._event.wait(), timeout)


def manager(
    pool: GrpcRayletClientPool, deaths: Deaths, **overrides: float
) -> HealthCheckManager:
    params: dict[str, Any] = {
        "initial_delay_s": 0.02,
        "period_s": 0.03,
        "timeout_s": 1.0,
        "failure_threshold": 3,
    }
    params.update(overrides)
    return HealthCheckManager(pool, deaths, **params)


def run(body: Callable[[GrpcRayletClientPool, Deaths], Awaitable[None]]) -> None:
    async def main() -> None:
        pool = GrpcRayletClientPool()
        try:
            await body(pool, Deaths())
        finally:
            await pool.stop()

    asyncio.run(main())


@pytest.fixture
def port() -> Iterator[int]:
    yield next(_ports)


@pytest.mark.timeout(60)
def test_node_that_stops_answering_is_declared_dead(port: int) -> None:
    async def body(pool: GrpcRayletClientPool, deaths: Deaths) -> None:
        raylet = await FakeRaylet(node_info(1, port)).start()
        checker = manager(pool, deaths)
        await checker.start(GcsInitData())
        checker.add_node(raylet.node)
        await until(lambda: raylet.health.checks >= 3)
        assert deaths.ids == []
        await raylet.stop()
        await deaths.wait()
        assert deaths.ids == [raylet.node.node_id]
        assert checker.nodes() == []
        await checker.stop()

    run(body)


@pytest.mark.timeout(60)
def test_answering_node_stays_alive(port: int) -> None:
    async def body(pool: GrpcRayletClientPool, deaths: Deaths) -> None:
        raylet = await FakeRaylet(node_info(2, port)).start()
        checker = manager(pool, deaths)
        await checker.start(GcsInitData())
        checker.add_node(raylet.node)
        await until(lambda: raylet.health.checks >= 4 * checker.failure_threshold)
        assert deaths.ids == []
        assert checker.nodes() == [raylet.node.node_id]
        await checker.stop()
        await raylet.stop()

    run(body)


@pytest.mark.timeout(60)
def test_a_success_resets_the_failure_count(port: int) -> None:
    # threshold 3: two failures, one success, over and over; 9 failures in all, never 3
    # in a row. Without the reset the node would be dead after the third failure.
    script = [NOT_SERVING, NOT_SERVING, SERVING] * 4 + [SERVING]

    async def body(pool: GrpcRayletClientPool, deaths: Deaths) -> None:
        raylet = await FakeRaylet(node_info(3, port), health_script=script).start()
        checker = manager(pool, deaths)
        await checker.start(GcsInitData())
        checker.add_node(raylet.node)
        await until(lambda: raylet.health.checks >= 13)
        assert deaths.ids == []
        await checker.stop()
        await raylet.stop()

    run(body)


@pytest.mark.timeout(60)
def test_not_serving_counts_as_a_failure(port: int) -> None:
    async def body(pool: GrpcRayletClientPool, deaths: Deaths) -> None:
        raylet = await FakeRaylet(node_info(4, port), health_script=[NOT_SERVING]).start()
        checker = manager(pool, deaths)
        await checker.start(GcsInitData())
        checker.add_node(raylet.node)
        await deaths.wait()
        assert raylet.health.checks == checker.failure_threshold
        await checker.stop()
        await raylet.stop()

    run(body)


@pytest.mark.timeout(60)
def test_raylet_restarted_under_another_id_fails_the_check(port: int) -> None:
    async def body(pool: GrpcRayletClientPool, deaths: Deaths) -> None:
        stranger = await FakeRaylet(node_info(5, port)).start()  # answers NOT_FOUND for us
        checker = manager(pool, deaths)
        await checker.start(GcsInitData())
        ours = node_info(6, port)
        checker.add_node(ours)
        await deaths.wait()
        assert deaths.ids == [ours.node_id]
        assert stranger.health.checks >= checker.failure_threshold
        await checker.stop()
        await stranger.stop()

    run(body)


@pytest.mark.timeout(60)
def test_mark_healthy_skips_checks(port: int) -> None:
    async def body(pool: GrpcRayletClientPool, deaths: Deaths) -> None:
        raylet = await FakeRaylet(node_info(7, port)).start()
        checker = manager(pool, deaths, period_s=0.2)
        await checker.start(GcsInitData())
        checker.add_node(raylet.node)
        await until(lambda: raylet.health.checks >= 1)
        await raylet.stop()  # the raylet is gone, but its syncer messages keep coming
        checks = raylet.health.checks
        for _ in range(40):  # well over threshold x period of syncer traffic
            checker.mark_healthy(raylet.node.node_id)
            await asyncio.sleep(0.02)
        assert raylet.health.checks == checks
        assert deaths.ids == []
        await deaths.wait()  # the messages stopped: checks resume and fail
        assert deaths.ids == [raylet.node.node_id]
        await checker.stop()

    run(body)


@pytest.mark.timeout(60)
def test_initial_delay_is_a_grace_period(port: int) -> None:
    async def body(pool: GrpcRayletClientPool, deaths: Deaths) -> None:
        raylet = await FakeRaylet(node_info(8, port)).start()
        checker = manager(pool, deaths, initial_delay_s=60.0)
        await checker.start(GcsInitData())
        checker.add_node(raylet.node)
        await asyncio.sleep(0.5)  # many periods, all inside the grace period
        assert raylet.health.checks == 0
        assert deaths.ids == []
        await checker.stop()
        await raylet.stop()

    run(body)


@pytest.mark.timeout(60)
def test_remove_node_and_stop_cancel_checks(port: int) -> None:
    async def body(pool: GrpcRayletClientPool, deaths: Deaths) -> None:
        checker = manager(pool, deaths)
        await checker.start(GcsInitData())
        gone, kept = node_info(9, port), node_info(10, port + 50)  # nothing listens there
        checker.add_node(gone)
        checker.add_node(kept)
        checker.add_node(kept)  # adding twice is harmless
        checker.remove_node(gone.node_id)
        assert checker.nodes() == [kept.node_id]
        await checker.stop()
        assert checker.nodes() == []
        await asyncio.sleep(0.5)  # far beyond threshold x period: nobody was declared dead
        assert deaths.ids == []

    run(body)


def test_rejects_bad_parameters() -> None:
    pool = GrpcRayletClientPool()
    with pytest.raises(ValueError):
        HealthCheckManager(pool, failure_threshold=0)
    with pytest.raises(ValueError):
        HealthCheckManager(pool, period_s=-1)


@pytest.mark.timeout(60)
def test_the_heads_system_config_sets_the_checks(port: int) -> None:
    """Settings as slow as an hour come down to the head's: a node that stops answering
    is then declared dead within a second. Values that make no sense are ignored."""

    async def body(pool: GrpcRayletClientPool, deaths: Deaths) -> None:
        raylet = await FakeRaylet(node_info(9, port)).start()
        checker = manager(pool, deaths, initial_delay_s=3600, period_s=3600, failure_threshold=9)
        checker.apply_system_config(
            {
                "health_check_initial_delay_ms": 20,
                "health_check_period_ms": 30,
                "health_check_timeout_ms": 500,
                "health_check_failure_threshold": 2,
                "unrelated_setting": 1,
            }
        )
        checker.apply_system_config(
            {"health_check_period_ms": -5, "health_check_failure_threshold": True}
        )
        assert (checker.period_s, checker.timeout_s, checker.failure_threshold) == (
            0.03, 0.5, 2,
        )  # fmt: skip
        await checker.start(GcsInitData())
        checker.add_node(raylet.node)
        await until(lambda: raylet.health.checks >= 2)
        await raylet.stop()
        await deaths.wait()
        assert deaths.ids == [raylet.node.node_id]
        await checker.stop()

    run(body)
