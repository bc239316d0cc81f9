"""Leader-only work promoted and demoted as a unit.

On becoming Raft leader of a term, the replica commits a barrier entry; once it is
applied, everything committed in earlier terms is in LMDB, and the replica *serves*
(listeners get `on_serving(term)`). On any loss of leadership it stops serving at once:
pending writes fail with a retryable error and listeners get `on_demoted()`.
The Raft term fences an old leader: its entries cannot commit after a new term began.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

from gcs_ha.consensus import envelope
from gcs_ha.consensus.api import LeadershipListener
from gcs_ha.consensus.proposer import GroupCommitProposer
from gcs_ha.errors import GcsHaError, NotLeaderError, UnknownOutcomeError

logger = logging.getLogger(__name__)

LEADER_STATE = 2
BARRIER_TIMEOUT_S = 5.0


class Leadership:
    """Tracks whether this replica serves, and in which term. Loop thread only."""

    def __init__(
        self,
        node_id: str,
        proposer: GroupCommitProposer,
        is_leader_of: Callable[[int], bool],
    ) -> None:
        self._node_id = node_id
        self._proposer = proposer
        self._is_leader_of = is_leader_of
        self._listeners: list[LeadershipListener] = []
        self._serving_term: int | None = None
        self._serving = asyncio.Event()
        self._promotion: asyncio.Task[None] | None = None

    @property
    def serving_term(self) -> int | None:
        return self._serving_term

    def is_serving(self) -> bool:
        term = self._serving_term
        return term is not None and self._is_leader_of(term)

    def add_listener(self, listener: LeadershipListener) -> None:
        self._listeners.append(listener)

    async def wait_serving(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._serving.wait(), timeout)
        except TimeoutError:
            return False
        return self.is_serving()

    def on_state_changed(self, old: int, new: int, term: int) -> None:
        """Raft role change, delivered on the loop in order."""
        if old == LEADER_STATE and new != LEADER_STATE:
            self.demote(f"lost leadership of term {term}")
        if new == LEADER_STATE:
            self._cancel_promotion()
            self._promotion = asyncio.get_running_loop().create_task(self._promote(term))

    def demote(self, why: str) -> None:
        self._cancel_promotion()
        was_serving = self._serving_term is not None
        self._serving_term = None
        self._serving.clear()
        self._proposer.fail_all(
            UnknownOutcomeError(f"leadership lost: {why}"),
            NotLeaderError(f"leadership lost before the request was proposed: {why}"),
        )
        if was_serving:
            logger.warning("stopped serving: %s", why)
            for listener in self._listeners:
                _call(listener.on_demoted)

    async def _promote(self, term: int) -> None:
        while self._is_leader_of(term):
            try:
                await asyncio.wait_for(
                    self._proposer.submit(envelope.barrier(term, self._node_id)),
                    BARRIER_TIMEOUT_S,
                )
            except (GcsHaError, TimeoutError) as exc:
                logger.info("barrier of term %d not committed yet (%s); retrying", term, exc)
                await asyncio.sleep(0.05)
                continue
            if self._is_leader_of(term):
                self._start_serving(term)
            return

    def _start_serving(self, term: int) -> None:
        self._serving_term = term
        self._serving.set()
        logger.info("serving as leader of term %d", term)
        for listener in self._listeners:
            _call(functools.partial(listener.on_serving, term))

    def _cancel_promotion(self) -> None:
        task, self._promotion = self._promotion, None
        if task is not None and not task.done() and task is not _current_task():
            task.cancel()


def _current_task() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def _call(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:
        logger.exception("a leadership listener failed")
