"""The cluster secret: where it comes from (`--secret-file`, else GCS_HA_SECRET), how it is
generated, and when it may be absent (`decide_security`). Rules: docs/security.md.

Raises ConfigError (with the problem named) for every refusal (an empty or too short
secret, --insecure with a secret or off loopback, no secret where one is needed) and for
a secret file that cannot be read or created.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gcs_ha.addresses import is_loopback
from gcs_ha.admin_auth import admin_key
from gcs_ha.errors import ConfigError

SECRET_ENV = "GCS_HA_SECRET"
MIN_SECRET_CHARS = 16

log = logging.getLogger(__name__)


def generate_secret_file(path: Path) -> bool:
    """Write a new random secret to `path` (mode 0600) unless it exists; True if written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        raise ConfigError(f"cannot create secret file {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32) + "\n")
        out.flush()
        os.fsync(out.fileno())
    return True


def read_secret_file(path: Path) -> bytes:
    """The secret stored in `path`; ConfigError when unreadable, empty or too short."""
    try:
        mode = path.stat().st_mode
        text = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {path}: {exc.strerror or exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("secret file %s is readable by others; chmod 600 it", path)
    return _checked(text, f"secret file {path}")


def load_secret(secret_file: Path | None, environ: Mapping[str, str]) -> bytes | None:
    """The cluster secret from `secret_file`, else from GCS_HA_SECRET, else None."""
    if secret_file is not None:
        return read_secret_file(secret_file)
    value = environ.get(SECRET_ENV)
    if value is None:
        return None
    return _checked(value.strip().encode(), f"${SECRET_ENV}")


def load_admin_key(secret_file: Path | None, environ: Mapping[str, str]) -> bytes | None:
    """The admin key (gcs_ha.admin_auth) of the secret `load_secret` finds, or None."""
    secret = load_secret(secret_file, environ)
    return None if secret is None else admin_key(secret)


def _checked(secret: bytes, origin: str) -> bytes:
    if not secret:
        raise ConfigError(f"{origin} is empty")
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(f"{origin} is too short: use at least {MIN_SECRET_CHARS} characters")
    return secret


@dataclass(frozen=True)
class Security:
    """What the replica runs with: a secret, or insecure (never both, never neither)."""

    secret: bytes | None
    insecure: bool


def decide_security(
    secret: bytes | None, insecure: bool, raft_addresses: Sequence[str], several: bool
) -> Security:
    """Check the secret / --insecure choice for these Raft addresses.

    `several` is True when the cluster has (or will have) more than this one replica:
    it has peers, or this replica is joining.
    """
    if secret is not None and insecure:
        raise ConfigError("--insecure was given together with a cluster secret; choose one")
    remote = [a for a in raft_addresses if not is_loopback(a)]
    if insecure and remote:
        raise ConfigError(
            f"--insecure is only allowed when every Raft address is loopback; "
            f"not loopback: {', '.join(remote)}"
        )
    if secret is not None or insecure:
        return Security(secret, insecure)
    if several:
        raise ConfigError(
            f"a cluster of several replicas needs a secret: give --secret-file PATH or set "
            f"{SECRET_ENV} (or --insecure, loopback addresses only)"
        )
    if remote:
        raise ConfigError(
            f"a secret is required when the Raft address is not loopback ({remote[0]}): "
            f"give --secret-file PATH or set {SECRET_ENV}"
        )
    return Security(None, True)
