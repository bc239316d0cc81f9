"""The pubsub manager: Ray's GCS long-poll publish/subscribe (Ray's GcsPublisher and the
GCS pubsub handlers), for both of Ray's pubsub services. `PubsubManager` owns one
`ChannelPublisher` per plane and per term, routes published messages by channel, and
keeps all-keys subscriptions across leaders. Failover rules: DESIGN.md, "Module notes".

Errors: UnavailableError (the manager is stopped: this replica does not serve; pending polls
get it when the manager stops), InvalidRequestError (an empty subscriber id, a command for a
channel the service does not carry or with neither subscribe nor unsubscribe, a GcsPublish
message for a channel the GCS does not carry, a job error whose job id is not 4 bytes), and
from `apply_commands` what the subscriber table's writes raise. `publish` never raises.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable

from gcs_ha.errors import GcsHaError, InvalidRequestError, UnavailableError
from gcs_ha.managers.manager import BackgroundTasks, GcsInitData
from gcs_ha.managers.ports import Publisher
from gcs_ha.managers.pubsub_publisher import ChannelPublisher, Limits, Plane, plane_of
from gcs_ha.proto.ray import pubsub_pb2
from gcs_ha.proto.ray.gcs_pb2 import (
    ActorTableData,
    ErrorTableData,
    GcsNodeAddressAndLiveness,
    GcsNodeInfo,
    JobTableData,
    WorkerDeltaData,
)
from gcs_ha.proto.ray.gcs_service_pb2 import GcsSubscriberCommandBatchRequest
from gcs_ha.storage.tables import GcsTable

__all__ = ["ChannelPublisher", "Limits", "Plane", "PubsubManager", "plane_of"]

log = logging.getLogger(__name__)

PubMessage = pubsub_pb2.PubMessage
PUBLISHER_ID_BYTES = 28  # Ray's publisher id is a random NodeID
JOB_ID_BYTES = 4
_PLANE_TAGS: dict[Plane, bytes] = {Plane.CONTROL: b"c", Plane.OBSERVABILITY: b"o"}


def _copy(message: PubMessage) -> PubMessage:
    """A copy for the publisher to own and number (callers keep their message)."""
    owned = PubMessage()
    owned.CopyFrom(message)
    return owned


class PubsubManager:
    """Ray's GCS publishers, rebuilt with fresh publisher ids at every start, with the
    all-keys subscriptions kept in `subscribers` (the subscriber table).

    Implements gcs_ha.managers.ports.Publisher (`publish`) for the other managers and the
    manager lifecycle; the pubsub servicers call `plane`, `apply_commands`, `publish_all`
    and `report_job_error`."""

    name = "pubsub"

    def __init__(
        self,
        subscribers: GcsTable[bytes, GcsSubscriberCommandBatchRequest],
        limits: Limits | None = None,
        clock: Callable[[], float] = time.monotonic,
        new_publisher_id: Callable[[], bytes] = lambda: os.urandom(PUBLISHER_ID_BYTES),
    ) -> None:
        self.limits = limits or Limits()
        self._table = subscribers
        self._clock = clock
        self._new_publisher_id = new_publisher_id
        self._planes: dict[Plane, ChannelPublisher] | None = None
        self._stored: dict[bytes, bytes] = {}  # the subscriber table: key -> record bytes
        self._tasks = BackgroundTasks(self.name)

    async def start(self, init: GcsInitData) -> None:
        """New publishers (fresh ids, sequences from 1), the stored all-keys subscriptions
        of `init.subscribers` subscribed again, and the dead-subscriber collector."""
        if self._planes is not None:
            await self.stop()
        planes = {
            plane: ChannelPublisher(plane, self._new_publisher_id(), self.limits, self._clock)
            for plane in Plane
        }
        self._stored = {
            key: record.SerializeToString()
            for key, record in init.subscribers.items()
            if _restore(planes, key, record)
        }
        self._planes = planes
        if self._stored:
            log.info("pubsub: %d subscribers subscribed again from the table", len(self._stored))
        self._tasks.spawn(self._collect_dead_subscribers(), "collect-dead-subscribers")

    async def stop(self) -> None:
        """Fail pending polls with UnavailableError (clients retry on the new leader),
        drop every subscriber and stop the collector and pending record deletes."""
        planes, self._planes = self._planes, None
        for publisher in (planes or {}).values():
            publisher.close(UnavailableError("the GCS leader stepped down; poll again"))
        self._stored = {}
        await self._tasks.cancel_all()

    def plane(self, plane: Plane) -> ChannelPublisher:
        """The current publisher of `plane`; UnavailableError while stopped."""
        return self._require()[plane]

    def _require(self) -> dict[Plane, ChannelPublisher]:
        if self._planes is None:
            raise UnavailableError("pubsub is not serving on this replica")
        return self._planes

    async def apply_commands(
        self,
        plane: Plane,
        subscriber_id: bytes,
        commands: Iterable[pubsub_pb2.Command],
        sender_id: bytes,
    ) -> None:
        """GcsSubscriberCommandBatch: subscribe and unsubscribe (ChannelPublisher
        .apply_commands), then, when a command names every key of a channel, store the
        subscriber's all-keys subscriptions (or delete their record when none is left),
        unless the table holds them already (Ray's raylets and workers subscribe again,
        unchanged, after every failover)."""
        publisher = self.plane(plane)
        commands = list(commands)
        publisher.apply_commands(subscriber_id, commands, sender_id)
        if any(not command.key_id for command in commands):
            await self._store(plane, subscriber_id)

    async def _store(self, plane: Plane, subscriber_id: bytes) -> None:
        key = _PLANE_TAGS[plane] + subscriber_id
        record = self.plane(plane).all_keys_record(subscriber_id)
        if record is None:
            if self._stored.pop(key, None) is not None:
                await self._table.delete(key)
            return
        data = record.SerializeToString()
        if self._stored.get(key) != data:
            await self._table.put(key, record)
            self._stored[key] = data

    def publish(self, message: PubMessage) -> None:
        """ports.Publisher: publish a copy of `message` on its channel's publisher. Never
        raises: while stopped, or for a channel the GCS does not carry, it logs and drops."""
        if self._planes is None:
            log.debug("pubsub stopped: dropped a message on channel %d", message.channel_type)
            return
        try:
            plane = plane_of(message.channel_type)
        except InvalidRequestError:
            log.error("pubsub: not a GCS channel, message dropped: %d", message.channel_type)
            return
        self._planes[plane].publish(_copy(message))

    def publish_all(self, messages: Iterable[PubMessage]) -> None:
        """GcsPublish (log monitors, dashboard agents, drivers): publish each message on
        the publisher of its channel, whichever service it came through. All are checked
        first (InvalidRequestError for a non-GCS channel); UnavailableError while stopped."""
        publishers = self._require()
        messages = list(messages)
        planes = [plane_of(message.channel_type) for message in messages]
        for plane, message in zip(planes, messages, strict=True):
            publishers[plane].publish(_copy(message))

    def report_job_error(self, error: ErrorTableData) -> None:
        """ReportJobError: publish `error` on RAY_ERROR_INFO_CHANNEL, keyed by the job id
        in hex, as Ray's GCS does."""
        if len(error.job_id) != JOB_ID_BYTES:
            raise InvalidRequestError(
                f"Invalid job_id: expected length {JOB_ID_BYTES} bytes, got {len(error.job_id)}"
            )
        publish_error(self.plane(Plane.OBSERVABILITY), error.job_id.hex().encode(), error)

    def remove_subscribers_of(self, sender_id: bytes) -> None:
        """Drop the subscribers a dead worker or node registered (Ray's
        RemoveSubscriberFrom), and their records. Does nothing while stopped."""
        for plane, publisher in (self._planes or {}).items():
            self._forget(plane, publisher.remove_subscribers_of(sender_id))

    def _forget(self, plane: Plane, subscriber_ids: Iterable[bytes]) -> None:
        """Delete, in the background, the records of removed subscribers."""
        keys = [_PLANE_TAGS[plane] + sid for sid in subscriber_ids]
        keys = [key for key in keys if self._stored.pop(key, None) is not None]
        if keys:
            self._tasks.spawn(self._delete_records(keys), "delete-subscriber-records")

    async def _delete_records(self, keys: list[bytes]) -> None:
        try:
            await self._table.batch_delete(keys)
        except GcsHaError as exc:  # a lost record is restored, then collected as idle
            log.warning("pubsub: %d subscriber records not deleted: %s", len(keys), exc)

    async def _collect_dead_subscribers(self) -> None:
        interval = self.limits.subscriber_timeout_s / 4
        while True:
            await asyncio.sleep(interval)
            for plane, publisher in (self._planes or {}).items():
                removed = publisher.check_dead_subscribers()
                if removed:
                    log.info("pubsub %s: removed %d dead subscribers", plane.value, len(removed))
                    self._forget(plane, removed)


def _restore(
    planes: dict[Plane, ChannelPublisher], key: bytes, record: GcsSubscriberCommandBatchRequest
) -> bool:
    """Subscribe a stored record again on its plane; False (logged) for a record that
    does not fit (an unknown plane tag or channel)."""
    plane = next((p for p, tag in _PLANE_TAGS.items() if key[:1] == tag), None)
    try:
        if plane is None or key[1:] != record.subscriber_id:
            raise InvalidRequestError(f"key {key[:1]!r} + subscriber does not match the record")
        planes[plane].restore(record)
    except InvalidRequestError as exc:
        log.warning("pubsub: subscriber record %s skipped: %s", key.hex(), exc)
        return False
    return True


# -- what the GCS publishes (Ray's GcsPublisher::Publish*), for the other managers --------


def publish_actor(publisher: Publisher, actor_id: bytes, data: ActorTableData) -> None:
    """GCS_ACTOR_CHANNEL, key = actor id (drivers subscribe per actor)."""
    publisher.publish(
        PubMessage(channel_type=pubsub_pb2.GCS_ACTOR_CHANNEL, key_id=actor_id, actor_message=data)
    )


def publish_job(publisher: Publisher, job_id: bytes, data: JobTableData) -> None:
    """GCS_JOB_CHANNEL, key = job id (raylets subscribe to all keys)."""
    publisher.publish(
        PubMessage(channel_type=pubsub_pb2.GCS_JOB_CHANNEL, key_id=job_id, job_message=data)
    )


def publish_node_info(publisher: Publisher, node_id: bytes, data: GcsNodeInfo) -> None:
    """GCS_NODE_INFO_CHANNEL, key = node id."""
    publisher.publish(
        PubMessage(
            channel_type=pubsub_pb2.GCS_NODE_INFO_CHANNEL, key_id=node_id, node_info_message=data
        )
    )


def publish_node_address_and_liveness(
    publisher: Publisher, node_id: bytes, data: GcsNodeAddressAndLiveness
) -> None:
    """GCS_NODE_ADDRESS_AND_LIVENESS_CHANNEL, key = node id (raylets, drivers)."""
    publisher.publish(
        PubMessage(
            channel_type=pubsub_pb2.GCS_NODE_ADDRESS_AND_LIVENESS_CHANNEL,
            key_id=node_id,
            node_address_and_liveness_message=data,
        )
    )


def publish_worker_failure(publisher: Publisher, worker_id: bytes, data: WorkerDeltaData) -> None:
    """GCS_WORKER_DELTA_CHANNEL, key = worker id."""
    publisher.publish(
        PubMessage(
            channel_type=pubsub_pb2.GCS_WORKER_DELTA_CHANNEL,
            key_id=worker_id,
            worker_delta_message=data,
        )
    )


def publish_error(publisher: Publisher, key: bytes, data: ErrorTableData) -> None:
    """RAY_ERROR_INFO_CHANNEL; Ray keys errors by a hex id as text (the job id's hex for
    job errors)."""
    publisher.publish(
        PubMessage(
            channel_type=pubsub_pb2.RAY_ERROR_INFO_CHANNEL, key_id=key, error_info_message=data
        )
    )
