"""The leader's hand-off on a clean stop: leadership to a caught-up follower, then stop.

On SIGTERM, SIGINT or the admin Shutdown call (never on a fatal error), a serving leader
transfers leadership as `gcs-ha transfer-leader` does and waits to hear from the new
leader, bounded by `gcs-ha start --handoff-timeout` (GCS_HA_HANDOFF_TIMEOUT, default 3s;
0s turns it off). When it cannot, it stops without; one log line says which. Why and
what it saves: DESIGN.md, "A leader's clean stop hands off first".
"""

from __future__ import annotations

import asyncio
import logging
import time

from gcs_ha.consensus.api import Replica
from gcs_ha.errors import GcsHaError

log = logging.getLogger(__name__)

HANDOFF_TIMEOUT_S = 3.0


async def hand_off(replica: Replica, timeout_s: float) -> str | None:
    """If `replica` serves as leader, hand leadership to a caught-up follower within
    `timeout_s`; returns the follower's node id, or None (not the leader, turned off, no
    quorum, no other member, or the transfer failed: logged). Never raises a GcsHaError."""
    status = replica.status()
    if not status.serving:
        return None
    if timeout_s <= 0:
        log.info("stopping the leader without a hand-off (--handoff-timeout 0s)")
        return None
    if len(status.members) < 2:
        log.info("stopping the leader without a hand-off: it is the only member")
        return None
    if not status.has_quorum:
        log.warning("stopping the leader without a hand-off: it has no quorum")
        return None
    started = time.monotonic()
    try:
        target = await replica.transfer_leadership(None, timeout_s)
    except GcsHaError as exc:
        log.warning(
            "leadership hand-off failed after %.0f ms (%s): stopping without it",
            (time.monotonic() - started) * 1000,
            exc,
        )
        return None
    leader, term = await _new_leader(replica, status.term, started + timeout_s)
    took = (time.monotonic() - started) * 1000
    if leader is None:
        log.warning(
            "handed leadership of term %d to %s, no new leader heard of in %.0f ms: stopping",
            status.term,
            target,
            took,
        )
        return target
    log.info(
        "handed leadership of term %d to %s (leader of term %d) in %.0f ms: stopping",
        status.term,
        leader,
        term,
        took,
    )
    return leader


async def _new_leader(replica: Replica, term: int, deadline: float) -> tuple[str | None, int]:
    """(node id, term) of the leader of a term after `term` once this replica hears of
    it (its status comes every 50 ms), or (None, 0) at `deadline` (time.monotonic())."""
    while True:
        status = replica.status()
        leader = status.leader_node_id
        if status.term > term and leader and leader != status.node_id:
            return leader, status.term
        if time.monotonic() >= deadline or not status.has_quorum:  # the others are gone too
            return None, 0
        await asyncio.sleep(0.01)
