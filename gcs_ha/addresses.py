"""HOST:PORT addresses: parsing, checking, and the loopback test used by --insecure.

Addresses are kept as the exact strings the operator gave, because Raft peers are
identified by their "host:port" string: the same replica must be named the same way
on every member.
"""

from __future__ import annotations

import ipaddress

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
