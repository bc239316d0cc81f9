"""The fault-injecting relay on the Raft peer links: network partitions without netns.

Runs as its own process, controlled by JSON lines on stdin/stdout:

    python -m gcs_ha.drill.relay --host 127.0.0.1 --base-port 33200 A0 A1 A2

The drill drives it through `RaftLinkRelay` (gcs_ha.drill.partitions, re-exported here).
Mechanism, protocol and the semantics of a cut are in DESIGN.md ("Network partitions").
The process raises nothing: a malformed request gets ok false, a port it cannot bind ends
it (code 2).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import selectors
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from gcs_ha.drill.partitions import Pair, RaftLinkRelay, RelayStatus, relay_port

__all__ = ["RaftLinkRelay", "Relay", "RelayStatus", "main", "relay_port"]

Handler = Callable[[int], None]  # called with the selector's event mask

READ_CHUNK = 256 * 1024
BUFFER_LIMIT = 8 * 2**20
"""Bytes waiting in the relay for one end before it stops reading the other (back-pressure)."""


# --------------------------------------------------------------------------- the relay


class _Pipe:
    """One connection through the relay: end 0 accepted from i, end 1 dialed to j."""

    def __init__(self, link: Pair, near: socket.socket, far: socket.socket | None) -> None:
        self.link = link
        self.socks: list[socket.socket | None] = [near, far]
        self.out = [bytearray(), bytearray()]  # out[k]: bytes waiting to be sent to end k
        self.events = [0, 0]  # what each end is registered for
        self.connecting = far is not None
        self.cut = far is None


class Relay:
    """The forwarding loop: one thread, one selector, the control lines on two fds."""

    def __init__(self, host: str, base_port: int, targets: Sequence[str]) -> None:
        self.host = host
        self.base_port = base_port
        self.n = len(targets)
        self.targets = [_resolve(t) for t in targets]
        self.sel = selectors.DefaultSelector()
        self.cut_links: set[Pair] = set()
        self.pipes: set[_Pipe] = set()
        self.forwarded = 0
        self.dropped = 0
        self.running = True
        self._control_buf = bytearray()
        self._out_fd = 1

    def listen(self) -> None:
        """Bind every pair's port (OSError if one is taken)."""
        for i in range(self.n):
            for j in range(self.n):
                if i != j:
                    port = relay_port(self.base_port, self.n, i, j)
                    sock = socket.create_server((self.host, port), backlog=64)
                    sock.setblocking(False)
                    self.sel.register(sock, selectors.EVENT_READ, self._acceptor(sock, (i, j)))

    def serve(self, in_fd: int, out_fd: int) -> None:
        """Announce readiness on out_fd, then run until in_fd closes."""
        self._out_fd = out_fd
        os.set_blocking(in_fd, False)
        self.sel.register(in_fd, selectors.EVENT_READ, lambda _: self._on_control(in_fd))
        self._answer({**self.status(), "ready": True})
        while self.running:
            for key, mask in self.sel.select():
                key.data(mask)
        for pipe in list(self.pipes):
            self._close(pipe)

    # -- control ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "ok": True,
            "cut": sorted([i, j] for i, j in self.cut_links if i < j),
            "connections": len(self.pipes),
            "cut_connections": sum(p.cut for p in self.pipes),
            "forwarded_bytes": self.forwarded,
            "dropped_bytes": self.dropped,
        }

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Carry out one request; ValueError/KeyError/TypeError for a malformed one."""
        op = request["op"]
        if op == "cut":
            self.cut([(int(i), int(j)) for i, j in request["pairs"]])
        elif op == "isolate":
            i = int(request["replica"])
            self.cut([(i, j) for j in range(self.n) if j != i])
        elif op == "heal":
            self.heal()
        elif op != "status":
            raise ValueError(f"unknown op {op!r}")
        return self.status()

    def cut(self, pairs: Iterable[Pair]) -> None:
        links = set()
        for i, j in pairs:
            if i == j or not (0 <= i < self.n and 0 <= j < self.n):
                raise ValueError(f"no link ({i}, {j}) among {self.n} replicas")
            links |= {(i, j), (j, i)}
        self.cut_links |= links
        for pipe in self.pipes:
            if pipe.link in links and not pipe.cut:
                pipe.cut = True
                self.dropped += len(pipe.out[0]) + len(pipe.out[1])
                pipe.out = [bytearray(), bytearray()]
                self._update(pipe)

    def heal(self) -> None:
        self.cut_links.clear()
        for pipe in [p for p in self.pipes if p.cut]:
            self._close(pipe)

    def _on_control(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not data:
            self.running = False
            return
        self._control_buf += data
        while b"\n" in self._control_buf:
            line, _, rest = bytes(self._control_buf).partition(b"\n")
            self._control_buf = bytearray(rest)
            if line.strip():
                self._answer(self._answer_for(line))

    def _answer_for(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise TypeError("a request is a JSON object")
            return self.handle(request)
        except (ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    def _answer(self, answer: dict[str, Any]) -> None:
        data = (json.dumps(answer) + "\n").encode()
        while data:
            data = data[os.write(self._out_fd, data) :]

    # -- forwarding ---------------------------------------------------------------------

    def _acceptor(self, listener: socket.socket, link: Pair) -> Handler:
        return lambda _: self._accept(listener, link)

    def _accept(self, listener: socket.socket, link: Pair) -> None:
        try:
            near, _ = listener.accept()
        except OSError:
            return
        near.setblocking(False)
        far = None
        if link not in self.cut_links:
            family, address = self.targets[link[1]]
            far = socket.socket(family, socket.SOCK_STREAM)
            far.setblocking(False)
            code = far.connect_ex(address)
            if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
                near.close()
                far.close()
                return
        for sock in (near, far):
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipe = _Pipe(link, near, far)
        self.pipes.add(pipe)
        self._update(pipe)

    def _on_event(self, pipe: _Pipe, k: int, mask: int) -> None:
        if pipe.socks[k] is None:
            return
        if mask & selectors.EVENT_WRITE:
            self._on_writable(pipe, k)
        if mask & selectors.EVENT_READ and pipe.socks[k] is not None:
            self._on_readable(pipe, k)

    def _on_readable(self, pipe: _Pipe, k: int) -> None:
        sock = pipe.socks[k]
        assert sock is not None
        try:
            data = sock.recv(READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # EOF or error: silent on a cut link, passed on otherwise
            self._close_end(pipe, k) if pipe.cut else self._close(pipe)
        elif pipe.cut:
            self.dropped += len(data)
        else:
            pipe.out[1 - k] += data
            self._update(pipe)

    def _on_writable(self, pipe: _Pipe, k: int) -> None:
        sock = pipe.socks[k]
        assert sock is not None
        if k == 1 and pipe.connecting:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._close_end(pipe, 1) if pipe.cut else self._close(pipe)
                return
            pipe.connecting = False
        elif pipe.out[k]:
            try:
                sent = sock.send(pipe.out[k])
            except BlockingIOError:
                return
            except OSError:
                self._close_end(pipe, k) if pipe.cut else self._close(pipe)
                return
            del pipe.out[k][:sent]
            self.forwarded += sent
        self._update(pipe)

    def _wanted(self, pipe: _Pipe, k: int) -> int:
        if pipe.socks[k] is None:
            return 0
        if k == 1 and pipe.connecting:
            return selectors.EVENT_WRITE
        if pipe.cut:
            return selectors.EVENT_READ  # read and drop
        wanted = selectors.EVENT_WRITE if pipe.out[k] else 0
        if len(pipe.out[1 - k]) < BUFFER_LIMIT:
            wanted |= selectors.EVENT_READ
        return wanted

    def _update(self, pipe: _Pipe) -> None:
        for k in (0, 1):
            sock, wanted = pipe.socks[k], self._wanted(pipe, k)
            if sock is None or wanted == pipe.events[k]:
                continue
            handler = _bind(self._on_event, pipe, k)
            if pipe.events[k] and wanted:
                self.sel.modify(sock, wanted, handler)
            elif wanted:
                self.sel.register(sock, wanted, handler)
            else:
                self.sel.unregister(sock)
            pipe.events[k] = wanted

    def _close_end(self, pipe: _Pipe, k: int) -> None:
        sock = pipe.socks[k]
        if sock is not None:
            if pipe.events[k]:
                self.sel.unregister(sock)
            sock.close()
            pipe.socks[k], pipe.events[k] = None, 0
        if pipe.socks == [None, None]:
            self.pipes.discard(pipe)

    def _close(self, pipe: _Pipe) -> None:
        self._close_end(pipe, 0)
        self._close_end(pipe, 1)


def _bind(method: Callable[[_Pipe, int, int], None], pipe: _Pipe, k: int) -> Handler:
    return lambda mask: method(pipe, k, mask)


def _resolve(address: str) -> tuple[int, Any]:
    host, _, port = address.rpartition(":")
    info = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0]
    return info[0], info[4]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gcs_ha.drill.relay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="where the relay ports listen")
    parser.add_argument("--base-port", type=int, required=True)
    parser.add_argument("targets", nargs="+", help="each replica's real Raft host:port")
    args = parser.parse_args(argv)
    try:
        relay = Relay(args.host, args.base_port, args.targets)
        relay.listen()
    except (OSError, ValueError) as exc:
        line = json.dumps({"ok": False, "error": f"cannot start: {exc}"}) + "\n"
        os.write(sys.stdout.fileno(), line.encode())
        return 2
    relay.serve(sys.stdin.fileno(), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
