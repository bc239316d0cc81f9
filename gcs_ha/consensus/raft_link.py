"""The front end's link to its consensus process (raft_host.py, raft_process.py).

`start()` spawns `python -m gcs_ha.consensus.raft_process` with one end of a socketpair,
sends CONFIG and waits for READY (or raises the error of START_FAILED). Requests are then
frames completed by DONE; ROLE, STATUS and ENV_REPLACED are handed to the callbacks on
this loop in order, METRICS_TEXT answers `metrics_text()`. When the stream ends without
`stop()`, every waiting request fails with UnavailableError and `on_lost(exit code)`
runs. Loop thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from gcs_ha.consensus import ipc
from gcs_ha.consensus.config import ReplicaConfig, config_to_doc
from gcs_ha.consensus.ipc import FrameReader, Kind, RaftStatus, Reason, frame
from gcs_ha.errors import (
    ConfigError,
    CorruptDataError,
    DataDirError,
    GcsHaError,
    InvalidRequestError,
    NotLeaderError,
    StorageError,
    UnavailableError,
    UnknownOutcomeError,
)
from gcs_ha.proto import raft_ipc_pb2 as ipc_pb

logger = logging.getLogger(__name__)

SOCKET_BUFFER_BYTES = 4 * 2**20
STOP_TIMEOUT_S = 15.0
REAP_TIMEOUT_S = 2.0
LEADER_STATE = 2

Done = Callable[[Any, GcsHaError | None], None]
StateChanged = Callable[[int, int, int], None]  # (old state, new state, term)
_Convert = Callable[[ipc_pb.Completion], Any]

# START_FAILED names the error class; anything else becomes a StorageError.
_START_ERRORS: dict[str, type[GcsHaError]] = {
    cls.__name__: cls for cls in (ConfigError, CorruptDataError, DataDirError, StorageError)
}


def error_for(reason: int, message: str = "") -> GcsHaError:
    """The gcs-ha error for a completion's reason (never SUCCESS)."""
    if reason == Reason.QUEUE_FULL:
        return UnavailableError("the Raft queue is full; retry")
    if reason in (Reason.MISSING_LEADER, Reason.NOT_LEADER):
        return NotLeaderError("no leader accepted the request")
    if reason == Reason.REQUEST_DENIED:
        return UnavailableError(
            "the request was denied (another membership change or a "
            "new leader still settling); retry"
        )
    if reason == Reason.REFUSED:
        return InvalidRequestError(message or "the consensus process refused the request")
    if reason == Reason.FAILED:
        return UnavailableError(f"the consensus process failed the request: {message}")
    return UnknownOutcomeError(f"the outcome of the entry is unknown (reason {reason})")


class RaftLink:
    """The consensus process of one replica, seen from its front end."""

    def __init__(
        self,
        config: ReplicaConfig,
        *,
        on_state_changed: StateChanged,
        on_env_replaced: Callable[[], None],
        on_lost: Callable[[int | None], None],
    ) -> None:
        self._config = config
        self._on_state_changed = on_state_changed
        self._on_env_replaced = on_env_replaced
        self._on_lost = on_lost
        self._proc: subprocess.Popen[bytes] | None = None
        self._transport: asyncio.Transport | None = None
        self._waiting: dict[int, tuple[_Convert, Done]] = {}
        self._metrics_waiting: dict[int, asyncio.Future[bytes]] = {}
        self._ids = itertools.count(1)
        self._ready: asyncio.Future[RaftStatus] | None = None
        self._status = RaftStatus()
        self._state = 0
        self._term = 0
        self._started = False
        self._stopping = False
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> RaftStatus:
        """Start the consensus process; returns its first status. Raises the error it
        could not start with (DataDirError, CorruptDataError, ConfigError, StorageError)."""
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for sock in (ours, theirs):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
        try:
            self._proc = _spawn(theirs)
        finally:
            theirs.close()
        self._ready = loop.create_future()
        self._transport, _ = await loop.create_unix_connection(lambda: _Stream(self), sock=ours)
        doc = {"replica": config_to_doc(self._config), "log_level": _log_level()}
        self._write(frame(Kind.CONFIG, body=ipc.encode_json(doc)))
        try:
            status = await self._ready
        except GcsHaError:
            await self._reap(STOP_TIMEOUT_S)
            raise
        self._started = True
        self._remember(status)
        return status

    async def stop(self) -> None:
        """Stop the consensus process cleanly (STOP, then wait for it to exit)."""
        if self._proc is None:
            return
        self._stopping = True
        if not self._closed:
            self._write(frame(Kind.STOP))
        code = await self._reap(STOP_TIMEOUT_S)
        if self._transport is not None:
            self._transport.close()
        self._fail_waiting(UnavailableError("the replica is stopping"))
        if code not in (0, None):
            logger.warning("the consensus process exited with code %s", code)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    # -- requests ---------------------------------------------------------------------

    def propose(self, data: bytes, done: Done) -> None:
        """Append `data` as a log entry; `done(results, error)`."""
        self._request(Kind.PROPOSE, data, _results, done)

    def read(self, done: Done) -> None:
        """Confirm leadership for a read (ReadIndex); `done(None, error)` once this
        replica's LMDB holds everything committed when the request arrived."""
        self._request(Kind.READ, b"", _nothing, done)

    def add_node(self, address: str, done: Done) -> None:
        self._request(Kind.ADD_NODE, address.encode(), _nothing, done)

    def remove_node(self, address: str, done: Done) -> None:
        self._request(Kind.REMOVE_NODE, address.encode(), _nothing, done)

    def transfer_leadership(self, address: str | None, done: Done) -> None:
        self._request(Kind.TRANSFER, (address or "").encode(), _nothing, done)

    def compact(self, done: Done) -> None:
        """Snapshot now; `done(snapshot index, error)`."""
        self._request(Kind.COMPACT, b"", _value, done)

    async def metrics_text(self) -> bytes:
        """The consensus process's metrics (Prometheus text format); UnavailableError
        when it is not running."""
        if self._closed or self._transport is None:
            raise UnavailableError("the consensus process is not running")
        request_id = next(self._ids)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._metrics_waiting[request_id] = future
        self._write(frame(Kind.METRICS, request_id))
        try:
            return await future
        finally:
            self._metrics_waiting.pop(request_id, None)

    # -- state, as last reported ------------------------------------------------------

    @property
    def status(self) -> RaftStatus:
        return self._status

    def is_leader(self) -> bool:
        return not self._closed and self._state == LEADER_STATE

    def term(self) -> int:
        return self._term

    # -- internals --------------------------------------------------------------------

    def _request(self, kind: Kind, body: bytes, convert: _Convert, done: Done) -> None:
        if self._closed or self._transport is None:
            done(None, UnavailableError("the consensus process is not running"))
            return
        request_id = next(self._ids)
        self._waiting[request_id] = (convert, done)
        self._write(frame(kind, request_id, body))

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def on_frame(self, kind: Kind, request_id: int, body: bytes) -> None:
        """A frame from the consensus process, in order."""
        if kind == Kind.DONE:
            self._complete(body)
        elif kind == Kind.STATUS:
            self._remember(RaftStatus.from_json(body))
        elif kind == Kind.ROLE:
            old, new, term = ipc.ROLE_BODY.unpack(body)
            self._state, self._term = new, term
            self._on_state_changed(old, new, term)
        elif kind == Kind.ENV_REPLACED:
            self._on_env_replaced()
        elif kind == Kind.METRICS_TEXT:
            future = self._metrics_waiting.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(body)
        elif kind == Kind.READY:
            self._resolve_ready(RaftStatus.from_json(body), None)
        elif kind == Kind.START_FAILED:
            doc = ipc.decode_json(body)
            error = _START_ERRORS.get(str(doc.get("error")), StorageError)
            self._resolve_ready(None, error(str(doc.get("message"))))

    def on_closed(self) -> None:
        """The stream ended (the consensus process exited or closed it)."""
        if self._closed:
            return
        self._closed = True
        self._fail_waiting(UnavailableError("the consensus process is gone"))
        self._resolve_ready(None, StorageError("the consensus process exited while starting"))
        if self._started and not self._stopping:
            asyncio.get_running_loop().create_task(self._report_lost())

    def _complete(self, body: bytes) -> None:
        done_list = ipc_pb.Completions()
        done_list.ParseFromString(body)
        for item in done_list.items:
            waiter = self._waiting.pop(item.id, None)
            if waiter is None:
                continue
            convert, done = waiter
            try:
                if item.reason == Reason.SUCCESS:
                    done(convert(item), None)
                else:
                    done(None, error_for(item.reason, item.message))
            except Exception:
                logger.exception("a Raft completion callback failed")

    def _remember(self, status: RaftStatus) -> None:
        self._status = status
        self._state, self._term = status.state, status.term

    def _resolve_ready(self, status: RaftStatus | None, error: GcsHaError | None) -> None:
        ready = self._ready
        if ready is None or ready.done():
            return
        if error is not None:
            ready.set_exception(error)
        else:
            assert status is not None
            ready.set_result(status)

    def _fail_waiting(self, error: GcsHaError) -> None:
        metrics, self._metrics_waiting = self._metrics_waiting, {}
        for future in metrics.values():
            if not future.done():
                future.set_exception(error)
        waiting, self._waiting = self._waiting, {}
        for _, done in waiting.values():
            with contextlib.suppress(Exception):
                done(None, error)

    async def _reap(self, timeout: float) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        try:
            return await asyncio.to_thread(proc.wait, timeout)
        except subprocess.TimeoutExpired:
            logger.error("the consensus process (pid %d) did not exit: killing it", proc.pid)
            proc.kill()
            return await asyncio.to_thread(proc.wait)

    async def _report_lost(self) -> None:
        code = await self._reap(REAP_TIMEOUT_S)
        logger.critical("the consensus process (pid %s) exited with code %s", self.pid, code)
        self._state = 0
        self._on_lost(code)


class _Stream(asyncio.Protocol):
    """Cuts the stream into frames for the link."""

    def __init__(self, link: RaftLink) -> None:
        self._link = link
        self._reader = FrameReader()
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._reader.feed(data)
            for kind, request_id, body in frames:
                self._link.on_frame(kind, request_id, body)
        except CorruptDataError:
            logger.exception("malformed frame from the consensus process: closing the stream")
            if self._transport is not None:
                self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._link.on_closed()


def _spawn(sock: socket.socket) -> subprocess.Popen[bytes]:
    fd = sock.fileno()
    cmd = [
        sys.executable,
        "-m",
        "gcs_ha.consensus.raft_process",
        f"--fd={fd}",
        f"--parent={os.getpid()}",
    ]
    try:
        return subprocess.Popen(cmd, pass_fds=(fd,), stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise StorageError(f"cannot start the consensus process: {exc}") from exc


def _log_level() -> str:
    return logging.getLevelName(logging.getLogger("gcs_ha").getEffectiveLevel())


def _results(item: ipc_pb.Completion) -> list[Any]:
    return list(item.results)


def _nothing(item: ipc_pb.Completion) -> None:
    return None


def _value(item: ipc_pb.Completion) -> int:
    return int(item.value)
