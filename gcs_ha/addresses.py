"""HOST:PORT addresses: parsing, checking, and the loopback test used by --insecure.

Addresses are kept as the exact strings the operator gave, because Raft peers are
identified by their "host:port" string: the same replica must be named the same way
on every member.
"""

from __future__ import annotations

import ipaddress
import socket

from gcs_ha.errors import ConfigError


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of "host:port" or "[v6]:port"; ConfigError naming the problem otherwise."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(f"bad address {address!r}: expected HOST:PORT")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(f"bad address {address!r}: port must be 1-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(c.isspace() for c in host) or ("[" in host or "]" in host):
        raise ConfigError(f"bad address {address!r}: expected HOST:PORT")
    return host, port


def check_address(address: str) -> str:
    """`address` itself once it parses as HOST:PORT (raises ConfigError otherwise)."""
    split_address(address)
    return address


def is_loopback(address: str) -> bool:
    """True when the host of `address` is "localhost" or a loopback IP (no DNS lookup)."""
    host, _ = split_address(address)
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Hosts Ray replaces with this machine's IP in an address it is given
# (ray._private.services.resolve_ip_for_localhost).
_RAY_REWRITTEN = frozenset({"localhost", "127.0.0.1", "::1"})
_PROBE = ("8.8.8.8", 53)  # a UDP "connect" picks the outbound interface; nothing is sent


def ray_node_ip() -> str:
    """The IP Ray 2.60 uses for this machine (its node IP "from perspective"): the
    address of the interface that routes to the internet, else 127.0.0.1."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(_PROBE)
            return str(sock.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def as_ray_sees_it(address: str, node_ip: str | None = None) -> str:
    """The address Ray's processes actually dial when given `address`: Ray rewrites
    localhost, 127.0.0.1 and ::1 to this machine's IP (`node_ip`, else `ray_node_ip()`);
    any other host, other loopback addresses included, is kept."""
    host, port = split_address(address)
    if host.lower() not in _RAY_REWRITTEN:
        return address
    return join_address(node_ip or ray_node_ip(), port)


def join_address(host: str, port: int) -> str:
    """"host:port", with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
