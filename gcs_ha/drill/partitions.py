"""The drill's side of the Raft link relay: start it, cut and heal links, stop it.

    relay = RaftLinkRelay([cluster.raft_address(i) for i in range(3)], base_port=33200)
    relay.start()   # replica i runs with GCS_HA_RAFT_DIAL = relay.env_for(i)
    relay.isolate(leader); relay.heal(); relay.close()

Each call returns once the change has taken effect on every connection.

Errors raised: ConfigError (a request the relay refused, e.g. a pair that names no
replica, or a port it could not bind), UnavailableError (the relay is not running, exited
or did not answer within `timeout_s`).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from gcs_ha.errors import ConfigError, UnavailableError
from gcs_ha.processes import terminate_all

Pair = tuple[int, int]


def relay_port(base_port: int, n: int, i: int, j: int) -> int:
    """The port where the relay listens for replica i dialing replica j (i != j)."""
    return base_port + i * n + j


@dataclass(frozen=True)
class RelayStatus:
    """The relay's answer: links cut (i < j), connections through it, byte counters."""

    cut: tuple[Pair, ...]
    connections: int
    cut_connections: int
    forwarded_bytes: int
    dropped_bytes: int


class RaftLinkRelay:
    """Starts, controls and stops the relay process (one thread at a time per call).

    targets: every replica's real Raft host:port, by replica index. Replica i must be
    started with GCS_HA_RAFT_DIAL = `env_for(i)` for its links to go through the relay.
    """

    def __init__(
        self,
        targets: Sequence[str],
        *,
        base_port: int,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        timeout_s: float = 20.0,
    ) -> None:
        self.targets = tuple(targets)
        self.base_port = base_port
        self.host = host
        self.log_path = log_path
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._buf = bytearray()
        self._lock = threading.Lock()

    @property
    def n(self) -> int:
        return len(self.targets)

    def relay_address(self, i: int, j: int) -> str:
        """Where replica i dials replica j."""
        return f"{self.host}:{relay_port(self.base_port, self.n, i, j)}"

    def env_for(self, i: int) -> str:
        """The GCS_HA_RAFT_DIAL value of replica i: every peer through its relay port."""
        return ",".join(
            f"{self.targets[j]}={self.relay_address(i, j)}" for j in range(self.n) if j != i
        )

    def start(self) -> RaftLinkRelay:
        """Start the relay process and wait until it listens (no-op if it runs)."""
        if self._proc is not None:
            return self
        cmd = [sys.executable, "-m", "gcs_ha.drill.relay", f"--host={self.host}"]
        cmd += [f"--base-port={self.base_port}", *self.targets]
        log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                bufsize=0,
                start_new_session=True,
            )
        finally:
            if log is not None:
                log.close()
        try:
            self._reply(time.monotonic() + self.timeout_s)
        except BaseException:
            self.close()
            raise
        return self

    def cut(self, pairs: Iterable[Pair]) -> None:
        """Cut the links between each pair (both directions), added to those cut."""
        self._request({"op": "cut", "pairs": [list(p) for p in pairs]})

    def isolate(self, i: int) -> None:
        """Cut every link of replica i."""
        self._request({"op": "isolate", "replica": i})

    def heal(self) -> None:
        """Every link works again; connections that lived through a cut are closed."""
        self._request({"op": "heal"})

    def status(self) -> RelayStatus:
        answer = self._request({"op": "status"})
        return RelayStatus(
            cut=tuple((int(i), int(j)) for i, j in answer["cut"]),
            connections=answer["connections"],
            cut_connections=answer["cut_connections"],
            forwarded_bytes=answer["forwarded_bytes"],
            dropped_bytes=answer["dropped_bytes"],
        )

    def close(self) -> None:
        """Stop the relay by its PID (SIGTERM, SIGKILL after 5 s); idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        terminate_all([proc], timeout=5.0)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> RaftLinkRelay:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the line protocol --------------------------------------------------------------

    def _request(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            proc = self._proc
            if proc is None or proc.stdin is None or proc.poll() is not None:
                raise UnavailableError("the relay is not running")
            data = (json.dumps(request) + "\n").encode()
            try:
                while data:
                    data = data[os.write(proc.stdin.fileno(), data) :]
            except OSError as exc:
                raise UnavailableError(f"the relay is gone: {exc}") from exc
            try:
                return self._reply(time.monotonic() + self.timeout_s)
            except UnavailableError:
                self.close()  # a late answer must never pass for the next request's
                raise

    def _reply(self, deadline: float) -> dict[str, Any]:
        """The next answer line; ConfigError if it says ok false."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise UnavailableError("the relay did not answer in time")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise UnavailableError(f"the relay exited (code {proc.wait()})")
                self._buf += chunk
        line, _, rest = bytes(self._buf).partition(b"\n")
        self._buf = bytearray(rest)
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise ConfigError(f"relay: {answer.get('error')}")
        return answer
