"""Ray's TLS (RAY_USE_TLS=1) on the gRPC port, configured as Ray 2.60 configures it:
mutual TLS from `RAY_TLS_SERVER_CERT`, `RAY_TLS_SERVER_KEY` and `RAY_TLS_CA_CERT`, on the
gRPC port and every channel gcs-ha opens (docs/security.md). The Raft port is not TLS.

Errors: `load_ray_tls` raises ConfigError naming a missing variable or an unreadable file.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from gcs_ha.errors import ConfigError

USE_TLS_ENV = "RAY_USE_TLS"
CERT_ENV = "RAY_TLS_SERVER_CERT"
KEY_ENV = "RAY_TLS_SERVER_KEY"
CA_ENV = "RAY_TLS_CA_CERT"
Options = Sequence[tuple[str, Any]]


@dataclass(frozen=True)
class RayTls:
    """The PEM bytes of this process's certificate chain and key, and of the CA."""

    cert: bytes
    key: bytes
    ca: bytes

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def load_ray_tls(environ: Mapping[str, str]) -> RayTls | None:
    """The TLS settings Ray processes started with `environ` use; None when TLS is off."""
    if environ.get(USE_TLS_ENV, "0").strip().lower() not in ("1", "true"):
        return None
    missing = [name for name in (CERT_ENV, KEY_ENV, CA_ENV) if not environ.get(name)]
    if missing:
        raise ConfigError(f"{USE_TLS_ENV} is on but {', '.join(missing)} is not set")
    cert, key, ca = (_read(name, environ[name]) for name in (CERT_ENV, KEY_ENV, CA_ENV))
    return RayTls(cert, key, ca)


def process_ray_tls() -> RayTls | None:
    """`load_ray_tls` of this process's environment, read once per setting: clients made
    again and again (the CLI's admin calls, the drill's load) do not reread the files."""
    names = (USE_TLS_ENV, CERT_ENV, KEY_ENV, CA_ENV)
    return _cached_tls(tuple(os.environ.get(name, "") for name in names))


@functools.lru_cache(maxsize=4)
def _cached_tls(values: tuple[str, str, str, str]) -> RayTls | None:
    names = (USE_TLS_ENV, CERT_ENV, KEY_ENV, CA_ENV)
    return load_ray_tls(dict(zip(names, values, strict=True)))


def _read(name: str, path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None
    if not data.strip():
        raise ConfigError(f"{name}: {path} is empty")
    return data


def aio_channel(address: str, tls: RayTls | None, options: Options = ()) -> grpc.aio.Channel:
    """A grpc.aio channel to `address`: over TLS when `tls` is given."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, tls.channel_credentials(), options=options)


def sync_channel(address: str, tls: RayTls | None, options: Options = ()) -> grpc.Channel:
    """A blocking grpc channel to `address`: over TLS when `tls` is given."""
    if tls is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, tls.channel_credentials(), options=options)
