"""The Raft link relay of `gcs-ha drill` and the dial map that puts it on the links.

Dial map: a real pysyncobj node (our make_conf, so our patch layer) whose peer is a plain
listening socket; with GCS_HA_RAFT_DIAL the node dials the socket standing as relay and
still introduces itself by its real address; without it, it dials the peer itself.
Relay: the real relay process (RaftLinkRelay), its targets plain listening sockets of the
test, so both ends of every connection through it are visible here.
Ports: 127.0.0.1:13000-13099.
"""

from __future__ import annotations

import select
import socket
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from gcs_ha.consensus import _pysyncobj as P
from gcs_ha.drill.relay import RaftLinkRelay, RelayStatus
from gcs_ha.errors import ConfigError, UnavailableError
from gcs_ha.testing.polling import wait_until

HOST = "127.0.0.1"
WAIT_S = 10.0

# ----------------------------------------------------------------------------- helpers


def listener(port: int) -> socket.socket:
    sock = socket.create_server((HOST, port), backlog=16)
    sock.settimeout(WAIT_S)
    return sock


def readable(sock: socket.socket) -> bool:
    """Whether data or an EOF is waiting on `sock` right now (no waiting)."""
    return bool(select.select([sock], [], [], 0)[0])


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    sock.settimeout(WAIT_S)
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return bytes(data)


def is_closed(sock: socket.socket) -> bool:
    """Wait for the next event on `sock`: True if it is an EOF or a reset."""
    sock.settimeout(WAIT_S)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


# ----------------------------------------------------------------------------- dial map


@pytest.fixture
def dial_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Set GCS_HA_RAFT_DIAL through `monkeypatch`; the dial map is reset afterwards."""
    yield monkeypatch
    monkeypatch.delenv(P.RAFT_DIAL_ENV, raising=False)
    P.load_dial_map()


def first_frame(sock: socket.socket) -> Any:
    """The first pysyncobj frame on an accepted, unencrypted connection, unpickled."""
    conn, _ = sock.accept()
    with conn:
        (size,) = struct.unpack("i", recv_exactly(conn, 4))
        return P.restricted_loads(zlib.decompress(recv_exactly(conn, size)))


def start_node(self_address: str, peer: str) -> Any:
    conf = P.make_conf(bind_address=self_address, password=None, insecure=True)
    return P.SyncObj(self_address, [peer], conf)


def test_parse_dial_map() -> None:
    text = " 127.0.0.1:1=127.0.0.1:2 ,10.0.0.1:3=127.0.0.1:4,"
    assert P.parse_dial_map(text) == {
        ("127.0.0.1", 1): ("127.0.0.1", 2),
        ("10.0.0.1", 3): ("127.0.0.1", 4),
    }
    assert P.parse_dial_map("") == {}
    for bad in ("127.0.0.1:1", "127.0.0.1:1=nohost", "a:b=c:1"):
        with pytest.raises(ConfigError):
            P.parse_dial_map(bad)


def test_a_node_dials_its_peer_through_the_relay_in_the_map(
    dial_env: pytest.MonkeyPatch,
) -> None:
    # 13001 > 13000 as strings, so the node at 13001 is the one that dials.
    me, peer, relay_port = f"{HOST}:13001", f"{HOST}:13000", 13002
    dial_env.setenv(P.RAFT_DIAL_ENV, f"{peer}={HOST}:{relay_port}")
    with listener(13000) as real, listener(relay_port) as relay:
        node = start_node(me, peer)
        try:
            assert first_frame(relay) == me  # it introduces itself by its real address
            assert not readable(real)
        finally:
            node.destroy()


def test_without_the_variable_a_node_dials_its_peer(dial_env: pytest.MonkeyPatch) -> None:
    me, peer = f"{HOST}:13004", f"{HOST}:13003"
    dial_env.delenv(P.RAFT_DIAL_ENV, raising=False)
    with listener(13003) as real:
        node = start_node(me, peer)
        try:
            assert first_frame(real) == me
        finally:
            node.destroy()


def test_a_malformed_dial_map_is_refused_by_make_conf(dial_env: pytest.MonkeyPatch) -> None:
    dial_env.setenv(P.RAFT_DIAL_ENV, "127.0.0.1:13005")
    with pytest.raises(ConfigError):
        P.make_conf(bind_address=f"{HOST}:13006", password=None, insecure=True)


# ----------------------------------------------------------------------------- the relay

TARGETS = (13010, 13011, 13012)  # the test's stand-ins for the replicas' Raft ports
RELAY_BASE = 13020  # pair (i, j) on 13020 + 3i + j


@pytest.fixture(scope="module")
def targets() -> Iterator[list[socket.socket]]:
    socks = [listener(port) for port in TARGETS]
    yield socks
    for sock in socks:
        sock.close()


@pytest.fixture(scope="module")
def relay(targets: list[socket.socket]) -> Iterator[RaftLinkRelay]:
    with RaftLinkRelay([f"{HOST}:{p}" for p in TARGETS], base_port=RELAY_BASE) as started:
        started.start()
        yield started


@pytest.fixture
def links(relay: RaftLinkRelay) -> Iterator[RaftLinkRelay]:
    """The relay, healed after the test."""
    yield relay
    relay.heal()


def dial(relay: RaftLinkRelay, i: int, j: int) -> socket.socket:
    host, _, port = relay.relay_address(i, j).rpartition(":")
    return socket.create_connection((host, int(port)), timeout=WAIT_S)


def connect(
    relay: RaftLinkRelay, targets: list[socket.socket], i: int, j: int
) -> tuple[socket.socket, socket.socket]:
    """(i's end, j's end) of a new connection i -> j through the relay."""
    near = dial(relay, i, j)
    far, _ = targets[j].accept()
    return near, far


def wait_status(relay: RaftLinkRelay, ok: Any) -> RelayStatus:
    def probe() -> RelayStatus | None:
        status = relay.status()
        return status if ok(status) else None

    return wait_until(probe, WAIT_S, "the relay never reached the expected state")


@pytest.mark.slow  # a real relay process
def test_env_for_maps_every_peer_to_its_relay_port(relay: RaftLinkRelay) -> None:
    assert relay.env_for(1) == "127.0.0.1:13010=127.0.0.1:13023,127.0.0.1:13012=127.0.0.1:13025"
    assert P.parse_dial_map(relay.env_for(0))[(HOST, 13012)] == (HOST, 13022)


@pytest.mark.slow  # a real relay process
def test_the_relay_forwards_bytes_both_ways(
    links: RaftLinkRelay, targets: list[socket.socket]
) -> None:
    near, far = connect(links, targets, 2, 0)
    with near, far:
        payload = bytes(range(256)) * 4000  # 1 MB, more than a socket buffer
        near.sendall(payload)
        assert recv_exactly(far, len(payload)) == payload
        far.sendall(b"reply")
        assert recv_exactly(near, 5) == b"reply"


@pytest.mark.slow  # a real relay process
def test_a_cut_drops_bytes_silently_both_ways_and_heal_closes_the_connection(
    links: RaftLinkRelay, targets: list[socket.socket]
) -> None:
    near, far = connect(links, targets, 0, 1)
    with near, far:
        near.sendall(b"before")
        assert recv_exactly(far, 6) == b"before"
        links.cut([(1, 0)])
        before = links.status()
        assert before.cut == ((0, 1),) and before.cut_connections == 1
        near.sendall(b"lost")
        far.sendall(b"lost too")
        wait_status(links, lambda s: s.dropped_bytes >= before.dropped_bytes + 12)
        # Dropped at the relay, and no EOF or reset either: nothing is waiting on either end.
        assert not readable(near) and not readable(far)
        links.heal()
        assert is_closed(near) and is_closed(far)
    near, far = connect(links, targets, 0, 1)  # new connections forward again
    with near, far:
        near.sendall(b"after")
        assert recv_exactly(far, 5) == b"after"


@pytest.mark.slow  # a real relay process
def test_a_connection_made_during_a_cut_is_silent_until_heal(
    links: RaftLinkRelay, targets: list[socket.socket]
) -> None:
    links.cut([(0, 2)])
    with dial(links, 2, 0) as near:
        wait_status(links, lambda s: s.cut_connections == 1)
        before = links.status().dropped_bytes
        near.sendall(b"hello?")
        wait_status(links, lambda s: s.dropped_bytes >= before + 6)
        assert not readable(near)
        assert not readable(targets[0])  # the relay never dialed replica 0
        links.heal()
        assert is_closed(near)
    wait_status(links, lambda s: s.connections == 0)


@pytest.mark.slow  # a real relay process
def test_isolate_cuts_every_link_of_one_replica_only(
    links: RaftLinkRelay, targets: list[socket.socket]
) -> None:
    links.isolate(1)
    assert links.status().cut == ((0, 1), (1, 2))
    near, far = connect(links, targets, 2, 0)  # a link of the others still works
    with near, far:
        near.sendall(b"majority")
        assert recv_exactly(far, 8) == b"majority"


@pytest.mark.slow  # a real relay process
def test_a_bad_request_is_refused_and_the_relay_goes_on(links: RaftLinkRelay) -> None:
    for pairs in ([(0, 0)], [(0, 3)]):
        with pytest.raises(ConfigError):
            links.cut(pairs)
    assert links.status().cut == ()


@pytest.mark.slow  # a real relay process
def test_close_stops_the_relay_process() -> None:
    relay = RaftLinkRelay([f"{HOST}:13090", f"{HOST}:13091"], base_port=13092).start()
    proc = relay._proc
    assert proc is not None and proc.poll() is None
    relay.close()
    assert proc.poll() is not None
    with pytest.raises(UnavailableError):
        relay.heal()


@pytest.mark.slow  # a real relay process
def test_a_taken_port_is_a_config_error() -> None:
    with listener(13094):
        relay = RaftLinkRelay([f"{HOST}:13090", f"{HOST}:13091"], base_port=13093)
        with pytest.raises(ConfigError, match="cannot start"):
            relay.start()
        assert relay._proc is None


def test_relay_addresses_need_no_running_relay() -> None:
    """The client computes addresses without a running relay (replicas start first)."""
    relay = RaftLinkRelay([f"{HOST}:1", f"{HOST}:2", f"{HOST}:3"], base_port=13080)
    assert [relay.relay_address(0, j) for j in (1, 2)] == [f"{HOST}:13081", f"{HOST}:13082"]
    assert relay.relay_address(2, 1) == f"{HOST}:13087"
    assert relay.env_for(2) == f"{HOST}:1={HOST}:13086,{HOST}:2={HOST}:13087"
    relay.close()  # nothing started: nothing to stop
