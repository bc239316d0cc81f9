"""One of Ray's GCS publishers (Ray's pubsub::Publisher): channels, per-subscriber
mailboxes, long polls and dead-subscriber collection, for gcs_ha.managers.pubsub_manager.
`ChannelPublisher` is one plane (control plane or observability). Mechanism: DESIGN.md,
"Module notes".

Errors: InvalidRequestError (an empty subscriber id, a command for a channel the service
does not carry or with neither subscribe nor unsubscribe). `publish` never raises.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gcs_ha.errors import GcsHaError, InvalidRequestError
from gcs_ha.proto.ray import pubsub_pb2
from gcs_ha.proto.ray.gcs_service_pb2 import GcsSubscriberCommandBatchRequest

log = logging.getLogger(__name__)

PubMessage = pubsub_pb2.PubMessage
MIB = 1024 * 1024


class Plane(enum.Enum):
    """Ray's two GCS publishers, one per pubsub service."""

    CONTROL = "control_plane"
    OBSERVABILITY = "observability"


CHANNELS: dict[Plane, frozenset[int]] = {
    Plane.CONTROL: frozenset(
        {
            pubsub_pb2.GCS_ACTOR_CHANNEL,
            pubsub_pb2.GCS_JOB_CHANNEL,
            pubsub_pb2.GCS_NODE_INFO_CHANNEL,
            pubsub_pb2.GCS_WORKER_DELTA_CHANNEL,
            pubsub_pb2.GCS_NODE_ADDRESS_AND_LIVENESS_CHANNEL,
        }
    ),
    Plane.OBSERVABILITY: frozenset(
        {
            pubsub_pb2.RAY_ERROR_INFO_CHANNEL,
            pubsub_pb2.RAY_LOG_CHANNEL,
            pubsub_pb2.RAY_NODE_RESOURCE_USAGE_CHANNEL,
        }
    ),
}


def plane_of(channel: int) -> Plane:
    """The publisher that carries `channel`; InvalidRequestError for a channel the GCS
    does not carry (the core workers' own channels)."""
    for plane, channels in CHANNELS.items():
        if channel in channels:
            return plane
    raise InvalidRequestError(f"Invalid channel type: {channel}")


@dataclass(frozen=True)
class Limits:
    """Ray's pubsub knobs (ray_config_def.h defaults) and gcs-ha's bounds."""

    subscriber_timeout_s: float = 300.0  # Ray's subscriber_timeout_ms
    batch_size: int = 5000  # Ray's publish_batch_size: messages per poll reply
    max_reply_bytes: int = 16 * MIB  # under the server's 64 MiB send limit
    max_message_bytes: int = 16 * MIB  # a bigger published message is dropped
    control_buffer_bytes: int = 64 * MIB  # per subscriber (Ray: unbounded)
    observability_buffer_bytes: int = 10 * MIB  # per subscriber (Ray: per key)

    def buffer_bytes(self, plane: Plane) -> int:
        if plane is Plane.CONTROL:
            return self.control_buffer_bytes
        return self.observability_buffer_bytes


@dataclass(eq=False)
class _Subscriber:
    id: bytes
    last_active: float
    mailbox: deque[tuple[PubMessage, int]] = field(default_factory=deque)  # (message, size)
    queued_bytes: int = 0
    dropped: int = 0
    poll: asyncio.Future[list[PubMessage]] | None = None
    subscriptions: set[tuple[int, bytes]] = field(default_factory=set)  # (channel, key)
    senders: set[bytes] = field(default_factory=set)


class ChannelPublisher:
    """One of Ray's GCS publishers (pubsub::Publisher): its channels' subscriptions,
    per-subscriber mailboxes, long polls and dead-subscriber collection. Single-threaded:
    every method runs on the event loop."""

    def __init__(
        self, plane: Plane, publisher_id: bytes, limits: Limits, clock: Callable[[], float]
    ) -> None:
        self.plane = plane
        self.publisher_id = publisher_id
        self._channels = CHANNELS[plane]
        self._limits = limits
        self._buffer_bytes = limits.buffer_bytes(plane)
        self._clock = clock
        self._last_sequence = 0
        self._subscribers: dict[bytes, _Subscriber] = {}
        self._index: dict[tuple[int, bytes], set[bytes]] = {}  # (channel, key) -> subscribers
        self._senders: dict[bytes, set[bytes]] = {}  # sender id -> subscriber ids

    def __contains__(self, subscriber_id: bytes) -> bool:
        return subscriber_id in self._subscribers

    # -- publishing --------------------------------------------------------------------

    def publish(self, message: PubMessage) -> None:
        """Give `message` (owned from now on, never changed again) the next sequence id
        and queue it for the subscribers of its channel and key."""
        self._last_sequence += 1
        message.sequence_id = self._last_sequence
        channel, key = message.channel_type, message.key_id
        targets = self._index.get((channel, b""), set())
        if key:
            targets = targets | self._index.get((channel, key), set())
        if not targets:
            return
        size = message.ByteSize()
        if size > self._limits.max_message_bytes:
            log.warning("pubsub: dropped a %d-byte message on channel %d (too big)", size, channel)
            return
        for subscriber_id in targets:
            self._queue(self._subscribers[subscriber_id], message, size)

    def _queue(self, sub: _Subscriber, message: PubMessage, size: int) -> None:
        sub.mailbox.append((message, size))
        sub.queued_bytes += size
        while sub.queued_bytes > self._buffer_bytes and len(sub.mailbox) > 1:
            _, dropped_size = sub.mailbox.popleft()
            sub.queued_bytes -= dropped_size
            sub.dropped += 1
            if sub.dropped == 1 or sub.dropped % 1000 == 0:
                log.warning(
                    "pubsub %s: subscriber %s is not keeping up; dropped its oldest message "
                    "(%d dropped so far)",
                    self.plane.value,
                    sub.id.hex(),
                    sub.dropped,
                )
        self._answer(sub)

    # -- polling -----------------------------------------------------------------------

    async def poll(
        self, subscriber_id: bytes, max_processed_sequence_id: int, publisher_id: bytes
    ) -> list[PubMessage]:
        """Acknowledge, then return the queued messages, waiting until there is one."""
        sub = self._subscriber(subscriber_id)
        if publisher_id == self.publisher_id:
            self._acknowledge(sub, max_processed_sequence_id)
        self._answer(sub, empty=True)  # a newer poll replaces an older one
        sub.last_active = self._clock()
        if sub.mailbox:
            return self._batch(sub)
        poll: asyncio.Future[list[PubMessage]] = asyncio.get_running_loop().create_future()
        sub.poll = poll
        try:
            return await poll
        finally:  # answered, failed, or the caller went away (messages stay queued)
            if sub.poll is poll:
                sub.poll = None
                sub.last_active = self._clock()

    def _acknowledge(self, sub: _Subscriber, max_processed_sequence_id: int) -> None:
        mailbox = sub.mailbox
        while mailbox and mailbox[0][0].sequence_id <= max_processed_sequence_id:
            sub.queued_bytes -= mailbox.popleft()[1]

    def _answer(self, sub: _Subscriber, *, empty: bool = False) -> None:
        """Answer the subscriber's pending poll: with its queued messages when it has
        some, with an empty reply when `empty` (forced), else leave it pending."""
        poll = sub.poll
        if poll is None or (not empty and not sub.mailbox):
            return
        sub.poll = None
        sub.last_active = self._clock()
        if not poll.done():
            poll.set_result([] if empty else self._batch(sub))

    def _batch(self, sub: _Subscriber) -> list[PubMessage]:
        batch: list[PubMessage] = []
        total = 0
        for message, size in sub.mailbox:
            full = len(batch) >= self._limits.batch_size
            if full or (batch and total + size > self._limits.max_reply_bytes):
                break
            batch.append(message)
            total += size
        return batch

    # -- subscriptions -----------------------------------------------------------------

    def apply_commands(
        self, subscriber_id: bytes, commands: Iterable[pubsub_pb2.Command], sender_id: bytes
    ) -> None:
        """Subscribe and unsubscribe, in order. A batch with an invalid command changes
        nothing. A subscriber left with no subscription gets its pending poll answered
        (empty), so a client that unsubscribed from everything stops polling."""
        _check_subscriber_id(subscriber_id)
        commands = list(commands)
        for command in commands:
            self._check_command(command)
        sender = sender_id or subscriber_id
        for command in commands:
            entry = (command.channel_type, command.key_id)
            if command.HasField("subscribe_message"):
                sub = self._subscriber(subscriber_id)
                sub.subscriptions.add(entry)
                self._index.setdefault(entry, set()).add(subscriber_id)
                sub.senders.add(sender)
                self._senders.setdefault(sender, set()).add(subscriber_id)
            else:
                self._unsubscribe(subscriber_id, entry)
        sub_or_none = self._subscribers.get(subscriber_id)
        if sub_or_none is not None and not sub_or_none.subscriptions:
            self._answer(sub_or_none, empty=True)

    def _check_command(self, command: pubsub_pb2.Command) -> None:
        if command.channel_type not in self._channels:
            raise InvalidRequestError(f"Invalid channel type: {command.channel_type}")
        if command.WhichOneof("command_message_one_of") is None:
            raise InvalidRequestError(
                "Unexpected pubsub command has been received: expected either "
                "unsubscribe or subscribe message"
            )

    def _unsubscribe(self, subscriber_id: bytes, entry: tuple[int, bytes]) -> None:
        sub = self._subscribers.get(subscriber_id)
        if sub is not None:
            sub.subscriptions.discard(entry)
        ids = self._index.get(entry)
        if ids is not None:
            ids.discard(subscriber_id)
            if not ids:
                del self._index[entry]

    def _subscriber(self, subscriber_id: bytes) -> _Subscriber:
        _check_subscriber_id(subscriber_id)
        sub = self._subscribers.get(subscriber_id)
        if sub is None:
            sub = _Subscriber(subscriber_id, last_active=self._clock())
            self._subscribers[subscriber_id] = sub
        return sub

    # -- removal -----------------------------------------------------------------------

    def remove_subscriber(self, subscriber_id: bytes) -> None:
        """Forget a subscriber: its subscriptions, mailbox, and pending poll (answered
        empty)."""
        sub = self._subscribers.pop(subscriber_id, None)
        if sub is None:
            return
        for entry in list(sub.subscriptions):
            self._unsubscribe(subscriber_id, entry)
        for sender in sub.senders:
            ids = self._senders.get(sender)
            if ids is not None:
                ids.discard(subscriber_id)
                if not ids:
                    del self._senders[sender]
        self._answer(sub, empty=True)

    def remove_subscribers_of(self, sender_id: bytes) -> list[bytes]:
        """Forget every subscriber that a sender (a worker or node id) registered;
        returns their ids."""
        removed = list(self._senders.get(sender_id, ()))
        for subscriber_id in removed:
            self.remove_subscriber(subscriber_id)
        return removed

    def check_dead_subscribers(self) -> list[bytes]:
        """Ray's CheckDeadSubscribers: a subscriber idle for the timeout gets its pending
        poll answered empty, or is removed when it has none. Returns the removed ids."""
        now = self._clock()
        dead = []
        for sub in self._subscribers.values():
            if now - sub.last_active < self._limits.subscriber_timeout_s:
                continue
            if sub.poll is not None:
                self._answer(sub, empty=True)
            else:
                dead.append(sub.id)
        for subscriber_id in dead:
            self.remove_subscriber(subscriber_id)
        return dead

    # -- what outlives a leader --------------------------------------------------------

    def all_keys_record(self, subscriber_id: bytes) -> GcsSubscriberCommandBatchRequest | None:
        """The subscribe commands that rebuild the subscriber's all-keys subscriptions
        (with one of its senders), or None when it has none."""
        sub = self._subscribers.get(subscriber_id)
        if sub is None:
            return None
        channels = sorted(channel for channel, key in sub.subscriptions if not key)
        if not channels:
            return None
        record = GcsSubscriberCommandBatchRequest(
            subscriber_id=subscriber_id, sender_id=min(sub.senders, default=b"")
        )
        for channel in channels:
            record.commands.add(channel_type=channel, subscribe_message={})
        return record

    def restore(self, record: GcsSubscriberCommandBatchRequest) -> None:
        """Subscribe again as `record` says (a record of `all_keys_record`). The
        subscriber counts as active from now on. InvalidRequestError for a record this
        publisher cannot carry."""
        self.apply_commands(record.subscriber_id, record.commands, record.sender_id)

    def close(self, error: GcsHaError) -> None:
        """Fail every pending poll with `error` and drop all state (the term ended)."""
        for sub in self._subscribers.values():
            poll, sub.poll = sub.poll, None
            if poll is not None and not poll.done():
                poll.set_exception(error)
        self._subscribers.clear()
        self._index.clear()
        self._senders.clear()


def _check_subscriber_id(subscriber_id: bytes) -> None:
    if not subscriber_id:
        raise InvalidRequestError("empty subscriber_id")
