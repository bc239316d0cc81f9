"""Ray's two pubsub services over a real grpc.aio server on loopback: our stubs here, and
Ray's own generated stubs and subscribers (Python and C++) in a subprocess."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import grpc
import grpc.aio
import pytest

from gcs_ha.managers.manager import GcsInitData
from gcs_ha.managers.pubsub_manager import Plane, PubsubManager, publish_actor, publish_job
from gcs_ha.proto.ray import gcs_pb2, pubsub_pb2
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.server.services.pubsub_service import mount
from gcs_ha.storage.memory import InMemoryStoreClient
from gcs_ha.storage.tables import GcsTableStorage

pytestmark = pytest.mark.timeout(120)

BASE_PORT = 12000  # this file uses 12000-12019
SUB = b"s" * 28
INVALID_ARGUMENT = 34
CONTROL = "/ray.rpc.ControlPlanePubSubGcsService/"
STATUS_FIELD_100 = b"\xa2\x06"  # tag of field 100, length-delimited


class Harness:
    """A started PubsubManager mounted on a grpc.aio server, and a client channel."""

    def __init__(self, manager: PubsubManager, channel: grpc.aio.Channel, address: str) -> None:
        self.manager = manager
        self.channel = channel
        self.address = address
        self.control = pb_grpc.ControlPlanePubSubGcsServiceStub(channel)  # type: ignore[no-untyped-call]
        self.observability = pb_grpc.ObservabilityPubSubServiceStub(channel)  # type: ignore[no-untyped-call]


@asynccontextmanager
async def serving(port: int) -> AsyncIterator[Harness]:
    manager = PubsubManager(GcsTableStorage(InMemoryStoreClient()).subscriber_table)
    await manager.start(GcsInitData())
    server = grpc.aio.server()
    mount(server, manager)
    address = f"127.0.0.1:{port}"
    server.add_insecure_port(address)
    await server.start()
    channel = grpc.aio.insecure_channel(address)
    try:
        yield Harness(manager, channel, address)
    finally:
        await channel.close(None)
        await manager.stop()
        await server.stop(grace=None)


def run(port: int, test: Callable[[Harness], Awaitable[None]]) -> None:
    async def main() -> None:
        async with serving(port) as harness:
            await test(harness)

    asyncio.run(main())


def subscribe(
    channel: pubsub_pb2.ChannelType, key: bytes = b""
) -> pb.GcsSubscriberCommandBatchRequest:
    command = pubsub_pb2.Command(channel_type=channel, key_id=key, subscribe_message={})
    return pb.GcsSubscriberCommandBatchRequest(subscriber_id=SUB, commands=[command])


def poll_request(max_processed: int = 0, publisher_id: bytes = b"") -> pb.GcsSubscriberPollRequest:
    return pb.GcsSubscriberPollRequest(
        subscriber_id=SUB, max_processed_sequence_id=max_processed, publisher_id=publisher_id
    )


async def started(
    call: Awaitable[pb.GcsSubscriberPollReply],
) -> asyncio.Task[pb.GcsSubscriberPollReply]:
    """Start a poll and give the server time to hold it (no assertion depends on how long)."""

    async def wrap() -> pb.GcsSubscriberPollReply:
        return await call

    task = asyncio.get_running_loop().create_task(wrap())
    await asyncio.sleep(0.1)
    return task


def test_subscribe_long_poll_and_gcs_publish() -> None:
    async def test(h: Harness) -> None:
        reply = await h.control.GcsSubscriberCommandBatch(subscribe(pubsub_pb2.GCS_JOB_CHANNEL))
        assert reply.status.code == 0
        poll = await started(h.control.GcsSubscriberPoll(poll_request()))
        assert not poll.done()
        message = pubsub_pb2.PubMessage(
            channel_type=pubsub_pb2.GCS_JOB_CHANNEL,
            key_id=b"\x01\x00\x00\x00",
            job_message=gcs_pb2.JobTableData(job_id=b"\x01\x00\x00\x00"),
        )
        published = await h.control.GcsPublish(pb.GcsPublishRequest(pub_messages=[message]))
        assert published.status.code == 0
        got = await poll
        assert got.publisher_id == h.manager.plane(Plane.CONTROL).publisher_id
        assert len(got.publisher_id) == 28
        assert [(m.key_id, m.sequence_id) for m in got.pub_messages] == [(b"\x01\x00\x00\x00", 1)]
        assert got.status.code == 0

    run(BASE_PORT, test)


def test_server_side_publish_reaches_a_key_subscriber() -> None:
    async def test(h: Harness) -> None:
        actor = b"a" * 16
        await h.control.GcsSubscriberCommandBatch(subscribe(pubsub_pb2.GCS_ACTOR_CHANNEL, actor))
        poll = await started(h.control.GcsSubscriberPoll(poll_request()))
        publish_actor(h.manager, b"b" * 16, gcs_pb2.ActorTableData(name="other"))
        publish_actor(h.manager, actor, gcs_pb2.ActorTableData(name="mine"))
        got = await poll
        assert [(m.key_id, m.actor_message.name) for m in got.pub_messages] == [(actor, "mine")]
        assert got.pub_messages[0].sequence_id == 2  # one sequence for the whole publisher

    run(BASE_PORT + 1, test)


def test_domain_errors_travel_in_status_field_100() -> None:
    async def test(h: Harness) -> None:
        raw = h.channel.unary_unary(
            CONTROL + "GcsSubscriberCommandBatch",
            request_serializer=None,
            response_deserializer=None,
        )
        request = subscribe(pubsub_pb2.RAY_LOG_CHANNEL).SerializeToString()
        reply_bytes = await raw(request)
        assert isinstance(reply_bytes, bytes)
        assert reply_bytes.startswith(STATUS_FIELD_100)
        reply = pb.GcsSubscriberCommandBatchReply.FromString(reply_bytes)
        assert (reply.status.code, reply.status.message) == (
            INVALID_ARGUMENT,
            f"Invalid channel type: {pubsub_pb2.RAY_LOG_CHANNEL}",
        )
        worker = pubsub_pb2.PubMessage(channel_type=pubsub_pb2.WORKER_REF_REMOVED_CHANNEL)
        published = await h.observability.GcsPublish(pb.GcsPublishRequest(pub_messages=[worker]))
        assert published.status.code == INVALID_ARGUMENT
        bad_job = pb.ReportJobErrorRequest(job_error=gcs_pb2.ErrorTableData(job_id=b"x"))
        assert (await h.observability.ReportJobError(bad_job)).status.code == INVALID_ARGUMENT

    run(BASE_PORT + 2, test)


def test_stop_ends_a_pending_poll_with_unavailable_and_a_new_term_has_a_new_publisher() -> None:
    async def test(h: Harness) -> None:
        await h.control.GcsSubscriberCommandBatch(subscribe(pubsub_pb2.GCS_JOB_CHANNEL))
        publish_job(h.manager, b"j1", gcs_pb2.JobTableData())
        first = await h.control.GcsSubscriberPoll(poll_request())
        old_id, old_seq = first.publisher_id, first.pub_messages[0].sequence_id
        poll = await started(h.control.GcsSubscriberPoll(poll_request(old_seq, old_id)))
        await h.manager.stop()  # demoted
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await poll
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await h.control.GcsSubscriberCommandBatch(subscribe(pubsub_pb2.GCS_JOB_CHANNEL))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        await h.manager.start(GcsInitData())  # promoted again: a new publisher
        poll = await started(h.control.GcsSubscriberPoll(poll_request(old_seq, old_id)))
        await h.control.GcsSubscriberCommandBatch(subscribe(pubsub_pb2.GCS_JOB_CHANNEL))
        publish_job(h.manager, b"j2", gcs_pb2.JobTableData())
        got = await poll
        assert got.publisher_id not in (b"", old_id)
        assert [(m.key_id, m.sequence_id) for m in got.pub_messages] == [(b"j2", 1)]

    run(BASE_PORT + 3, test)


def test_a_poll_abandoned_by_its_client_loses_nothing() -> None:
    async def test(h: Harness) -> None:
        await h.control.GcsSubscriberCommandBatch(subscribe(pubsub_pb2.GCS_JOB_CHANNEL))
        with pytest.raises(grpc.aio.AioRpcError) as expired:
            await h.control.GcsSubscriberPoll(poll_request(), timeout=0.2)
        assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        publish_job(h.manager, b"j1", gcs_pb2.JobTableData())
        got = await h.control.GcsSubscriberPoll(poll_request())
        assert [m.key_id for m in got.pub_messages] == [b"j1"]

    run(BASE_PORT + 4, test)


def test_observability_service_has_its_own_publisher() -> None:
    async def test(h: Harness) -> None:
        channels = (pubsub_pb2.RAY_ERROR_INFO_CHANNEL, pubsub_pb2.RAY_LOG_CHANNEL)
        commands = [pubsub_pb2.Command(channel_type=c, subscribe_message={}) for c in channels]
        request = pb.GcsSubscriberCommandBatchRequest(subscriber_id=SUB, commands=commands)
        assert (await h.observability.GcsSubscriberCommandBatch(request)).status.code == 0
        error = gcs_pb2.ErrorTableData(job_id=b"\x01\x00\x00\x00", error_message="boom")
        reported = await h.observability.ReportJobError(pb.ReportJobErrorRequest(job_error=error))
        assert reported.status.code == 0
        log = pubsub_pb2.PubMessage(channel_type=pubsub_pb2.RAY_LOG_CHANNEL, key_id=b"ip")
        log.log_batch_message.lines.append("hello")
        await h.observability.GcsPublish(pb.GcsPublishRequest(pub_messages=[log]))
        got = await h.observability.GcsSubscriberPoll(poll_request())
        assert got.publisher_id == h.manager.plane(Plane.OBSERVABILITY).publisher_id
        assert got.publisher_id != h.manager.plane(Plane.CONTROL).publisher_id
        assert [(m.key_id, m.sequence_id) for m in got.pub_messages] == [
            (b"01000000", 1),
            (b"ip", 2),
        ]
        assert got.pub_messages[1].log_batch_message.lines == ["hello"]

    run(BASE_PORT + 5, test)


RAY_CLIENT = r"""
import asyncio, json, sys

import grpc
from ray.core.generated import common_pb2, gcs_pb2, pubsub_pb2 as p
from ray.core.generated import gcs_service_pb2 as g, gcs_service_pb2_grpc as gg

address = sys.argv[1]
out = {}
channel = grpc.insecure_channel(address)
control = gg.ControlPlanePubSubGcsServiceStub(channel)
observability = gg.ObservabilityPubSubServiceStub(channel)
sub = b"r" * 28
job_id = bytes.fromhex("01000000")


def commands(stub, *cmds):
    request = g.GcsSubscriberCommandBatchRequest(subscriber_id=sub, commands=list(cmds))
    return stub.GcsSubscriberCommandBatch(request, timeout=30)


actor = p.Command(channel_type=p.GCS_ACTOR_CHANNEL, key_id=b"a" * 16, subscribe_message={})
out["subscribe_status"] = commands(control, actor).status.code
print("subscribed", flush=True)  # the test publishes the actor now
poll = control.GcsSubscriberPoll(g.GcsSubscriberPollRequest(subscriber_id=sub), timeout=60)
out["long_poll"] = {
    "publisher_id": poll.publisher_id.hex(),
    "status": poll.status.code,
    "messages": [
        [m.channel_type, m.key_id.hex(), m.sequence_id, m.actor_message.name]
        for m in poll.pub_messages
    ],
}
commands(control, p.Command(channel_type=p.GCS_JOB_CHANNEL, subscribe_message={}))
job = p.PubMessage(
    channel_type=p.GCS_JOB_CHANNEL, key_id=job_id, job_message=gcs_pb2.JobTableData(job_id=job_id)
)
control.GcsPublish(g.GcsPublishRequest(pub_messages=[job]), timeout=30)
ack = control.GcsSubscriberPoll(
    g.GcsSubscriberPollRequest(
        subscriber_id=sub,
        max_processed_sequence_id=poll.pub_messages[-1].sequence_id,
        publisher_id=poll.publisher_id,
    ),
    timeout=60,
)
out["ack_poll"] = {
    "messages": [[m.channel_type, m.key_id.hex(), m.sequence_id] for m in ack.pub_messages]
}
bad = commands(observability, p.Command(channel_type=p.GCS_JOB_CHANNEL, subscribe_message={}))
out["bad_channel_status"] = [bad.status.code, bad.status.message]

import ray._raylet  # Ray's C++ subscriber (PythonGcsSubscriber)

errors = ray._raylet.GcsErrorSubscriber(address=address)
errors.subscribe()
error = gcs_pb2.ErrorTableData(job_id=job_id, type="test", error_message="boom")
report = observability.ReportJobError(g.ReportJobErrorRequest(job_error=error), timeout=30)
out["report_job_error_status"] = report.status.code
key, data = errors.poll(timeout=30)
key = key.decode() if isinstance(key, bytes) else key
out["cpp_error_subscriber"] = [key, data["error_message"]]
errors.close()

from ray._private.gcs_pubsub import GcsAioResourceUsageSubscriber


async def resource_usage():
    subscriber = GcsAioResourceUsageSubscriber(address=address)
    await subscriber.subscribe()
    usage = p.PubMessage(
        channel_type=p.RAY_NODE_RESOURCE_USAGE_CHANNEL,
        key_id=b"node-1",
        node_resource_usage_message=common_pb2.NodeResourceUsage(json='{"CPU": 1}'),
    )
    observability.GcsPublish(g.GcsPublishRequest(pub_messages=[usage]), timeout=30)
    got = await subscriber.poll(timeout=30)
    out["observability_publisher_id"] = subscriber._publisher_id.hex()
    await subscriber.close()
    return list(got)


out["aio_resource_usage"] = asyncio.run(resource_usage())
print(json.dumps(out), flush=True)
"""


@pytest.mark.slow
def test_rays_own_stubs_and_subscribers() -> None:
    """Ray 2.60's generated stubs, its Python aio subscriber and its C++ error subscriber
    (in a subprocess: never import ray next to gcs_ha.proto.ray)."""

    async def test(h: Harness) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            RAY_CLIENT,
            h.address,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        try:
            line = await process.stdout.readline()
            assert line.strip() == b"subscribed", line
            publish_actor(h.manager, b"a" * 16, gcs_pb2.ActorTableData(name="det"))
            out, err = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 0, err.decode()[-3000:]
        result = json.loads(out.decode().strip().splitlines()[-1])
        control_id = h.manager.plane(Plane.CONTROL).publisher_id.hex()
        observability_id = h.manager.plane(Plane.OBSERVABILITY).publisher_id.hex()
        assert result["subscribe_status"] == 0
        assert result["long_poll"]["publisher_id"] == control_id
        assert result["long_poll"]["messages"] == [[2, "61" * 16, 1, "det"]]
        assert result["long_poll"]["status"] == 0
        assert result["ack_poll"]["messages"] == [[3, "01000000", 2]]
        assert result["bad_channel_status"] == [INVALID_ARGUMENT, "Invalid channel type: 3"]
        assert result["report_job_error_status"] == 0
        assert result["cpp_error_subscriber"] == ["01000000", "boom"]
        assert result["aio_resource_usage"] == ["node-1", '{"CPU": 1}']
        assert result["observability_publisher_id"] == observability_id

    run(BASE_PORT + 10, test)
