"""PubsubManager and ChannelPublisher: Ray's long-poll pubsub semantics, on the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from gcs_ha.errors import InvalidRequestError, UnavailableError
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.managers.pubsub_manager import (
    PUBLISHER_ID_BYTES,
    ChannelPublisher,
    Limits,
    Plane,
    PubsubManager,
    publish_actor,
    publish_error,
    publish_job,
    publish_node_address_and_liveness,
    publish_node_info,
    publish_worker_failure,
)
from gcs_ha.proto.ray import gcs_pb2, pubsub_pb2
from gcs_ha.proto.ray.gcs_service_pb2 import GcsSubscriberCommandBatchRequest
from gcs_ha.proto.ray.logging_pb2 import LogBatch
from gcs_ha.storage.memory import InMemoryStoreClient
from gcs_ha.storage.tables import GcsTable, GcsTableStorage

pytestmark = pytest.mark.timeout(60)  # a poll that never returns fails fast

SUB = b"s" * 28
OTHER = b"o" * 28
JOB = pubsub_pb2.GCS_JOB_CHANNEL
ACTOR = pubsub_pb2.GCS_ACTOR_CHANNEL
LOG = pubsub_pb2.RAY_LOG_CHANNEL
ERROR = pubsub_pb2.RAY_ERROR_INFO_CHANNEL


def new_table() -> GcsTable[bytes, GcsSubscriberCommandBatchRequest]:
    return GcsTableStorage(InMemoryStoreClient()).subscriber_table


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(test: Callable[[PubsubManager], Awaitable[None]], **kwargs: Any) -> None:
    """Run `test` with a started manager, stopping it afterwards."""

    async def main() -> None:
        manager = PubsubManager(new_table(), **kwargs)
        await manager.start(GcsInitData())
        try:
            await test(manager)
        finally:
            await manager.stop()

    asyncio.run(main())


def sub_cmd(channel: pubsub_pb2.ChannelType, key: bytes = b"") -> pubsub_pb2.Command:
    return pubsub_pb2.Command(channel_type=channel, key_id=key, subscribe_message={})


def unsub_cmd(channel: pubsub_pb2.ChannelType, key: bytes = b"") -> pubsub_pb2.Command:
    return pubsub_pb2.Command(channel_type=channel, key_id=key, unsubscribe_message={})


def job(job_id: bytes) -> pubsub_pb2.PubMessage:
    return pubsub_pb2.PubMessage(
        channel_type=JOB, key_id=job_id, job_message=gcs_pb2.JobTableData(job_id=job_id)
    )


async def pending(coro: Coroutine[Any, Any, list[pubsub_pb2.PubMessage]]) -> asyncio.Task[Any]:
    """Start a poll and let it reach its wait."""
    task = asyncio.get_running_loop().create_task(coro)
    for _ in range(3):
        await asyncio.sleep(0)
    return task


def keys(messages: list[pubsub_pb2.PubMessage]) -> list[bytes]:
    return [m.key_id for m in messages]


def test_fresh_publisher_ids_per_start_and_sequences_from_one() -> None:
    async def main() -> None:
        manager = PubsubManager(new_table())
        ids = []
        for _ in range(2):
            await manager.start(GcsInitData())
            control = manager.plane(Plane.CONTROL)
            observability = manager.plane(Plane.OBSERVABILITY)
            assert len(control.publisher_id) == PUBLISHER_ID_BYTES
            assert control.publisher_id != observability.publisher_id
            ids.append(control.publisher_id)
            control.apply_commands(SUB, [sub_cmd(JOB)], b"")
            publish_job(manager, b"j1", gcs_pb2.JobTableData())
            publish_job(manager, b"j2", gcs_pb2.JobTableData())
            got = await control.poll(SUB, 0, b"")
            assert [m.sequence_id for m in got] == [1, 2]
            await manager.stop()
        assert ids[0] != ids[1]

    asyncio.run(main())


def test_poll_waits_until_a_message_arrives() -> None:
    async def test(manager: PubsubManager) -> None:
        control = manager.plane(Plane.CONTROL)
        control.apply_commands(SUB, [sub_cmd(JOB)], b"")
        poll = await pending(control.poll(SUB, 0, b""))
        assert not poll.done()
        publish_job(manager, b"j1", gcs_pb2.JobTableData(job_id=b"j1"))
        got = await poll
        assert keys(got) == [b"j1"]
        assert got[0].job_message.job_id == b"j1"
        assert got[0].sequence_id > 0

    run(test)


def test_key_and_all_key_subscriptions() -> None:
    async def test(manager: PubsubManager) -> None:
        control = manager.plane(Plane.CONTROL)
        control.apply_commands(SUB, [sub_cmd(ACTOR, b"a1")], b"")
        control.apply_commands(OTHER, [sub_cmd(ACTOR)], b"")
        for actor in (b"a1", b"a2"):
            publish_actor(manager, actor, gcs_pb2.ActorTableData(actor_id=actor))
        assert keys(await control.poll(SUB, 0, b"")) == [b"a1"]
        assert keys(await control.poll(OTHER, 0, b"")) == [b"a1", b"a2"]

    run(test)


def test_subscribed_to_a_key_and_to_all_keys_gets_each_message_once() -> None:
    async def test(manager: PubsubManager) -> None:
        control = manager.plane(Plane.CONTROL)
        control.apply_commands(SUB, [sub_cmd(ACTOR, b"a1"), sub_cmd(ACTOR)], b"")
        publish_actor(manager, b"a1", gcs_pb2.ActorTableData())
        assert keys(await control.poll(SUB, 0, b"")) == [b"a1"]

    run(test)


def test_messages_stay_until_acknowledged_with_this_publisher_id() -> None:
    async def test(manager: PubsubManager) -> None:
        control = manager.plane(Plane.CONTROL)
        pid = control.publisher_id
        control.apply_commands(SUB, [sub_cmd(JOB)], b"")
        for j in (b"j1", b"j2"):
            publish_job(manager, j, gcs_pb2.JobTableData())
        first = await control.poll(SUB, 0, b"")
        assert keys(first) == [b"j1", b"j2"]
        # A lost reply: the same poll again gets the same messages.
        assert keys(await control.poll(SUB, 0, pid)) == [b"j1", b"j2"]
        # Another publisher's id acknowledges nothing (a client from an earlier term).
        assert keys(await control.poll(SUB, 2, b"x" * 28)) == [b"j1", b"j2"]
        assert keys(await control.poll(SUB, first[0].sequence_id, pid)) == [b"j2"]
        poll = await pending(control.poll(SUB, first[1].sequence_id, pid))
        assert not poll.done()
        publish_job(manager, b"j3", gcs_pb2.JobTableData())
        assert keys(await poll) == [b"j3"]

    run(test)


def test_a_new_poll_answers_the_pending_one_empty() -> None:
    async def test(manager: PubsubManager) -> None:
        control = manager.plane(Plane.CONTROL)
        control.apply_commands(SUB, [sub_cmd(JOB)], b"")
        first = await pending(control.poll(SUB, 0, b""))
        second = await pending(control.poll(SUB, 0, b""))
        assert await first == []
        publish_job(manager, b"j1", gcs_pb2.JobTableData())
        assert keys(await second) == [b"j1"]

    run(test)


def test_poll_from_unknown_subscriber_waits_for_its_subscription() -> None:
    async def test(manager: PubsubManager) -> None:
        control = manager.plane(Plane.CONTROL)
        poll = await pending(control.poll(SUB, 7, b"old-leader-id"))
        publish_job(manager, b"before", gcs_pb2.JobTableData())
        assert not poll.done()
        control.apply_commands(SUB, [sub_cmd(JOB)], b"")
        publish_job(manager, b"after", gcs_pb2.JobTableData())
        assert keys(await poll) == [b"after"]

    run(test)


def test_reply_batches_are_bounded() -> None:
    async def test(manager: PubsubManager) -> None:
        control = manager.plane(Plane.CONTROL)
        pid = control.publisher_id
        control.apply_commands(SUB, [sub_cmd(JOB)], b"")
        for i in range(5):
            publish_job(manager, b"j%d" % i, gcs_pb2.JobTableData())
        first = await control.poll(SUB, 0, b"")
        assert keys(first) == [b"j0", b"j1", b"j2"]
        rest = await control.poll(SUB, first[-1].sequence_id, pid)
        assert keys(rest) == [b"j3", b"j4"]

    run(test, limits=Limits(batch_size=3))


def test_reply_bytes_are_bounded_but_one_message_always_goes() -> None:
    async def test(manager: PubsubManager) -> None:
        control = manager.plane(Plane.CONTROL)
        pid = control.publisher_id
        control.apply_commands(SUB, [sub_cmd(JOB)], b"")
        for i in range(3):
            data = gcs_pb2.JobTableData(entrypoint="x" * 150)
            publish_job(manager, b"j%d" % i, data)
        got = await control.poll(SUB, 0, b"")
        assert keys(got) == [b"j0"]
        assert keys(await control.poll(SUB, got[0].sequence_id, pid)) == [b"j1"]

    run(test, limits=Limits(max_reply_bytes=200))


def test_a_full_mailbox_drops_its_oldest_messages() -> None:
    async def test(manager: PubsubManager) -> None:
        observability = manager.plane(Plane.OBSERVABILITY)
        observability.apply_commands(SUB, [sub_cmd(LOG)], b"")
        for i in range(10):
            batch = LogBatch(ip="1.2.3.4", lines=[f"line {i}" + "x" * 80])
            manager.publish(
                pubsub_pb2.PubMessage(channel_type=LOG, key_id=b"%d" % i, log_batch_message=batch)
            )
        got = await observability.poll(SUB, 0, b"")
        assert 1 <= len(got) < 10
        assert got[-1].key_id == b"9"  # the newest are kept
        assert [m.sequence_id for m in got] == sorted(m.sequence_id for m in got)

    run(test, limits=Limits(observability_buffer_bytes=400))


def test_unsubscribe_stops_delivery_and_unsubscribing_everything_ends_the_poll() -> None:
    async def test(manager: PubsubManager) -> None:
        control = manager.plane(Plane.CONTROL)
        control.apply_commands(SUB, [sub_cmd(ACTOR, b"a1"), sub_cmd(JOB)], b"")
        control.apply_commands(SUB, [unsub_cmd(ACTOR, b"a1")], b"")
        publish_actor(manager, b"a1", gcs_pb2.ActorTableData())
        publish_job(manager, b"j1", gcs_pb2.JobTableData())
        got = await control.poll(SUB, 0, b"")
        assert keys(got) == [b"j1"]
        poll = await pending(control.poll(SUB, got[0].sequence_id, control.publisher_id))
        assert not poll.done()
        control.apply_commands(SUB, [unsub_cmd(JOB)], b"")
        assert await poll == []

    run(test)


def test_invalid_commands_change_nothing() -> None:
    async def test(manager: PubsubManager) -> None:
        control = manager.plane(Plane.CONTROL)
        observability = manager.plane(Plane.OBSERVABILITY)
        bad_batches = [
            [sub_cmd(JOB), sub_cmd(LOG)],  # an observability channel on the control plane
            [sub_cmd(JOB), sub_cmd(pubsub_pb2.WORKER_REF_REMOVED_CHANNEL)],
            [sub_cmd(JOB), pubsub_pb2.Command(channel_type=JOB)],  # neither sub nor unsub
        ]
        for batch in bad_batches:
            with pytest.raises(InvalidRequestError):
                control.apply_commands(SUB, batch, b"")
        with pytest.raises(InvalidRequestError, match="Invalid channel type: 3"):
            observability.apply_commands(SUB, [sub_cmd(JOB)], b"")
        with pytest.raises(InvalidRequestError):
            control.apply_commands(b"", [sub_cmd(JOB)], b"")
        assert SUB not in control
        assert SUB not in observability

    run(test)


def test_dead_subscribers_are_collected() -> None:
    clock = FakeClock()

    async def test(manager: PubsubManager) -> None:
        control = manager.plane(Plane.CONTROL)
        control.apply_commands(SUB, [sub_cmd(JOB)], b"")  # never polls
        control.apply_commands(OTHER, [sub_cmd(JOB)], b"")
        poll = await pending(control.poll(OTHER, 0, b""))
        clock.now += 299
        assert control.check_dead_subscribers() == []
        clock.now += 1
        assert control.check_dead_subscribers() == [SUB]
        assert SUB not in control
        assert await poll == []  # a held poll is released, its subscriber kept
        assert OTHER in control
        publish_job(manager, b"j1", gcs_pb2.JobTableData())
        assert keys(await control.poll(OTHER, 0, b"")) == [b"j1"]

    run(test, clock=clock)


def test_remove_subscribers_of_a_sender() -> None:
    async def test(manager: PubsubManager) -> None:
        control = manager.plane(Plane.CONTROL)
        node = b"n" * 28
        control.apply_commands(SUB, [sub_cmd(JOB)], node)
        control.apply_commands(OTHER, [sub_cmd(JOB)], b"")  # its own id is its sender id
        poll = await pending(control.poll(SUB, 0, b""))
        manager.remove_subscribers_of(node)
        assert await poll == []
        assert SUB not in control
        manager.remove_subscribers_of(OTHER)
        assert OTHER not in control

    run(test)


def test_stop_fails_pending_polls_and_everything_after_is_unavailable() -> None:
    async def main() -> None:
        manager = PubsubManager(new_table())
        await manager.start(GcsInitData())
        control = manager.plane(Plane.CONTROL)
        control.apply_commands(SUB, [sub_cmd(JOB)], b"")
        poll = await pending(control.poll(SUB, 0, b""))
        await manager.stop()
        with pytest.raises(UnavailableError):
            await poll
        with pytest.raises(UnavailableError):
            manager.plane(Plane.CONTROL)
        with pytest.raises(UnavailableError):
            manager.publish_all([job(b"j1")])
        publish_job(manager, b"j1", gcs_pb2.JobTableData())  # dropped, never raises
        manager.remove_subscribers_of(SUB)

    asyncio.run(main())


def test_a_cancelled_poll_loses_nothing() -> None:
    async def test(manager: PubsubManager) -> None:
        control = manager.plane(Plane.CONTROL)
        control.apply_commands(SUB, [sub_cmd(JOB)], b"")
        poll = await pending(control.poll(SUB, 0, b""))
        poll.cancel()
        with pytest.raises(asyncio.CancelledError):
            await poll
        publish_job(manager, b"j1", gcs_pb2.JobTableData())
        assert keys(await control.poll(SUB, 0, b"")) == [b"j1"]

    run(test)


def test_publish_all_routes_by_channel_and_rejects_non_gcs_channels() -> None:
    async def test(manager: PubsubManager) -> None:
        control = manager.plane(Plane.CONTROL)
        observability = manager.plane(Plane.OBSERVABILITY)
        control.apply_commands(SUB, [sub_cmd(JOB)], b"")
        observability.apply_commands(SUB, [sub_cmd(LOG)], b"")
        log = pubsub_pb2.PubMessage(channel_type=LOG, key_id=b"k", log_batch_message=LogBatch())
        log.sequence_id = 99  # the publisher numbers messages itself
        manager.publish_all([job(b"j1"), log])
        assert keys(await control.poll(SUB, 0, b"")) == [b"j1"]
        got = await observability.poll(SUB, 0, b"")
        assert keys(got) == [b"k"]
        assert got[0].sequence_id == 1
        worker = pubsub_pb2.PubMessage(channel_type=pubsub_pb2.WORKER_OBJECT_LOCATIONS_CHANNEL)
        with pytest.raises(InvalidRequestError):
            manager.publish_all([job(b"j2"), worker])
        assert keys(await control.poll(SUB, 0, b"")) == [b"j1"]  # j2 was not published

    run(test)


def test_report_job_error_is_keyed_by_job_id_hex() -> None:
    async def test(manager: PubsubManager) -> None:
        observability = manager.plane(Plane.OBSERVABILITY)
        observability.apply_commands(SUB, [sub_cmd(ERROR)], b"")
        job_id = bytes.fromhex("01000000")
        manager.report_job_error(gcs_pb2.ErrorTableData(job_id=job_id, error_message="boom"))
        got = await observability.poll(SUB, 0, b"")
        assert keys(got) == [b"01000000"]
        assert got[0].error_info_message.error_message == "boom"
        with pytest.raises(InvalidRequestError, match="expected length 4"):
            manager.report_job_error(gcs_pb2.ErrorTableData(job_id=b"short"))

    run(test)


def test_typed_publishers_fill_channel_key_and_payload() -> None:
    async def test(manager: PubsubManager) -> None:
        control = manager.plane(Plane.CONTROL)
        observability = manager.plane(Plane.OBSERVABILITY)
        channels = [
            pubsub_pb2.GCS_NODE_INFO_CHANNEL,
            pubsub_pb2.GCS_NODE_ADDRESS_AND_LIVENESS_CHANNEL,
            pubsub_pb2.GCS_WORKER_DELTA_CHANNEL,
        ]
        control.apply_commands(SUB, [sub_cmd(c) for c in channels], b"")
        observability.apply_commands(SUB, [sub_cmd(ERROR)], b"")
        publish_node_info(manager, b"n1", gcs_pb2.GcsNodeInfo(node_id=b"n1"))
        publish_node_address_and_liveness(
            manager, b"n1", gcs_pb2.GcsNodeAddressAndLiveness(node_id=b"n1")
        )
        publish_worker_failure(manager, b"w1", gcs_pb2.WorkerDeltaData(worker_id=b"w1"))
        publish_error(manager, b"ab", gcs_pb2.ErrorTableData(type="node_removed"))
        got = await control.poll(SUB, 0, b"")
        assert [(m.channel_type, m.key_id, m.WhichOneof("inner_message")) for m in got] == [
            (channels[0], b"n1", "node_info_message"),
            (channels[1], b"n1", "node_address_and_liveness_message"),
            (channels[2], b"w1", "worker_delta_message"),
        ]
        errors = await observability.poll(SUB, 0, b"")
        assert errors[0].error_info_message.type == "node_removed"

    run(test)


def test_publish_copies_the_callers_message() -> None:
    async def test(manager: PubsubManager) -> None:
        control = manager.plane(Plane.CONTROL)
        control.apply_commands(SUB, [sub_cmd(JOB)], b"")
        message = job(b"j1")
        manager.publish(message)
        message.key_id = b"changed"
        assert message.sequence_id == 0
        assert keys(await control.poll(SUB, 0, b"")) == [b"j1"]

    run(test)


def test_a_publisher_alone_satisfies_the_port() -> None:
    publisher = ChannelPublisher(Plane.CONTROL, b"p" * 28, Limits(), FakeClock())
    publish_job(publisher, b"j1", gcs_pb2.JobTableData())  # no subscriber: nothing queued
    assert SUB not in publisher


# -- subscriptions to every key outlive the leader ----------------------------------------


def log_message(line: str) -> pubsub_pb2.PubMessage:
    return pubsub_pb2.PubMessage(
        channel_type=LOG, key_id=b"", log_batch_message=LogBatch(lines=[line])
    )


def test_all_keys_subscriptions_are_subscribed_again_by_the_next_leader() -> None:
    async def main() -> None:
        tables = GcsTableStorage(InMemoryStoreClient())
        old = PubsubManager(tables.subscriber_table)
        await old.start(await GcsInitData.load(tables))
        await old.apply_commands(Plane.OBSERVABILITY, SUB, [sub_cmd(LOG), sub_cmd(ERROR)], b"w")
        await old.apply_commands(Plane.CONTROL, OTHER, [sub_cmd(ACTOR, b"a1")], b"w")
        old_id = old.plane(Plane.OBSERVABILITY).publisher_id
        await old.stop()  # the leader went away: every mailbox and poll with it

        new = PubsubManager(tables.subscriber_table)
        await new.start(await GcsInitData.load(tables))
        observability = new.plane(Plane.OBSERVABILITY)
        assert SUB in observability
        assert OTHER not in new.plane(Plane.CONTROL)  # keyed: Ray's C++ side resubscribes
        poll = await pending(observability.poll(SUB, 7, old_id))  # the driver's next poll
        new.publish(log_message("after the failover"))
        [message] = await poll
        assert (message.sequence_id, list(message.log_batch_message.lines)) == (
            1,
            ["after the failover"],
        )
        await new.stop()

    asyncio.run(main())


def test_records_follow_unsubscribe_and_removal() -> None:
    async def main() -> None:
        tables = GcsTableStorage(InMemoryStoreClient())
        manager = PubsubManager(tables.subscriber_table)
        await manager.start(GcsInitData())
        await manager.apply_commands(Plane.CONTROL, SUB, [sub_cmd(JOB), sub_cmd(ACTOR, b"a")], b"")
        [record] = (await tables.subscriber_table.get_all()).values()
        assert [(c.channel_type, c.key_id) for c in record.commands] == [(JOB, b"")]
        assert record.sender_id == SUB  # its own id when the request named no sender
        await manager.apply_commands(Plane.CONTROL, SUB, [unsub_cmd(JOB)], b"")
        assert await tables.subscriber_table.get_all() == {}

        await manager.apply_commands(Plane.OBSERVABILITY, OTHER, [sub_cmd(LOG)], b"w" * 28)
        assert len(await tables.subscriber_table.get_all()) == 1
        manager.remove_subscribers_of(b"w" * 28)  # the worker died
        for _ in range(5):
            await asyncio.sleep(0)
        assert await tables.subscriber_table.get_all() == {}
        await manager.stop()

    asyncio.run(main())


def test_a_record_that_does_not_fit_is_skipped() -> None:
    async def main() -> None:
        tables = GcsTableStorage(InMemoryStoreClient())
        wrong_plane = GcsSubscriberCommandBatchRequest(subscriber_id=SUB, commands=[sub_cmd(LOG)])
        await tables.subscriber_table.put(b"c" + SUB, wrong_plane)
        await tables.subscriber_table.put(b"x" + OTHER, wrong_plane)
        good = GcsSubscriberCommandBatchRequest(subscriber_id=OTHER, commands=[sub_cmd(JOB)])
        await tables.subscriber_table.put(b"c" + OTHER, good)
        manager = PubsubManager(tables.subscriber_table)
        await manager.start(await GcsInitData.load(tables))
        control = manager.plane(Plane.CONTROL)
        assert OTHER in control and SUB not in control
        await manager.stop()

    asyncio.run(main())


def test_an_unchanged_subscription_is_not_written_again() -> None:
    async def main() -> None:
        tables = GcsTableStorage(InMemoryStoreClient())
        manager = PubsubManager(tables.subscriber_table)
        await manager.start(GcsInitData())
        await manager.apply_commands(Plane.CONTROL, SUB, [sub_cmd(JOB)], b"")
        await tables.subscriber_table.delete(b"c" + SUB)  # behind the manager's back
        await manager.apply_commands(Plane.CONTROL, SUB, [sub_cmd(JOB)], b"")  # a resubscribe
        assert await tables.subscriber_table.get_all() == {}  # nothing written again
        await manager.apply_commands(Plane.CONTROL, SUB, [sub_cmd(ACTOR)], b"")  # a change
        [record] = (await tables.subscriber_table.get_all()).values()
        assert sorted(c.channel_type for c in record.commands) == sorted([ACTOR, JOB])
        await manager.stop()

    asyncio.run(main())
