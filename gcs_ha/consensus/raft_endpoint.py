"""The consensus process's end of the stream to its front end (ipc.py frames).

Before Raft starts, the CONFIG frame is read blocking (`read_config`). Then the socket is
non-blocking and served by pysyncobj's poller (`attach`): readable data is cut into frames
and handed to `on_frame` in order; `send` queues a frame and `flush` writes what the
socket takes, waiting for POLLOUT for the rest. EOF or a socket error calls `on_closed`
once. A malformed frame closes the stream (the front end is the only peer: a bug).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

from gcs_ha.consensus import ipc
from gcs_ha.consensus.ipc import FrameReader, Kind
from gcs_ha.errors import ConfigError, CorruptDataError

logger = logging.getLogger(__name__)

RECV_BYTES = 4 * 2**20
# pysyncobj's POLL_EVENT_TYPE (kept here so this module needs no pysyncobj).
POLL_READ, POLL_WRITE, POLL_ERROR = 1, 2, 4

OnFrame = Callable[[Kind, int, bytes], None]


class Endpoint:
    def __init__(self, sock: socket.socket, on_frame: OnFrame, on_closed: Callable[[], None]):
        self._sock = sock
        self._on_frame = on_frame
        self._on_closed = on_closed
        self._reader = FrameReader()
        self._out = bytearray()
        self._poller: Any = None
        self._waiting_write = False
        self._closed = False

    def read_config(self) -> dict[str, Any]:
        """Block until the CONFIG frame arrives; ConfigError if the stream ends first or
        starts with anything else."""
        while True:
            data = self._sock.recv(RECV_BYTES)
            if not data:
                raise ConfigError("the front end closed the stream before sending the config")
            frames = self._reader.feed(data)
            if frames:
                kind, _, body = frames[0]
                if kind != Kind.CONFIG or len(frames) > 1:
                    raise ConfigError(f"expected one CONFIG frame first, got {kind.name}")
                return ipc.decode_json(body)

    def attach(self, poller: Any) -> None:
        """Serve the socket from `poller` (pysyncobj's) from now on."""
        self._sock.setblocking(False)
        self._poller = poller
        self._subscribe()

    def send(self, data: bytes) -> None:
        """Queue a frame; `flush` writes it."""
        if not self._closed:
            self._out += data

    def send_now(self, data: bytes) -> None:
        """Write a frame at once, blocking (before `attach` only)."""
        self._sock.sendall(data)

    def flush(self) -> None:
        """Write as much of the queue as the socket takes without blocking."""
        if not self._out or self._closed or self._waiting_write:
            return
        self._write()

    def close(self) -> None:
        """Stop serving the socket and close it. Idempotent."""
        if self._poller is not None and not self._closed:
            self._poller.unsubscribe(self._sock.fileno())
        self._closed = True
        self._sock.close()

    # -- poller events ----------------------------------------------------------------

    def _subscribe(self) -> None:
        mask = POLL_READ | POLL_ERROR | (POLL_WRITE if self._waiting_write else 0)
        self._poller.subscribe(self._sock.fileno(), self._on_event, mask)

    def _on_event(self, descr: int, events: int) -> None:
        if self._closed:
            return
        if events & POLL_WRITE:
            self._write()
        if events & (POLL_READ | POLL_ERROR):
            self._read()

    def _read(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(RECV_BYTES)
            except BlockingIOError:
                return
            except OSError as exc:
                self._lost(f"read failed: {exc}")
                return
            if not data:
                self._lost("EOF")
                return
            try:
                frames = self._reader.feed(data)
            except CorruptDataError as exc:
                self._lost(str(exc))
                return
            for kind, request_id, body in frames:
                self._on_frame(kind, request_id, body)
            if len(data) < RECV_BYTES:
                return

    def _write(self) -> None:
        try:
            sent = self._sock.send(self._out)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._lost(f"write failed: {exc}")
            return
        del self._out[:sent]
        waiting = bool(self._out)
        if waiting != self._waiting_write:
            self._waiting_write = waiting
            self._subscribe()

    def _lost(self, why: str) -> None:
        logger.info("stream to the front end closed (%s)", why)
        self._poller.unsubscribe(self._sock.fileno())
        self._closed = True
        self._on_closed()
