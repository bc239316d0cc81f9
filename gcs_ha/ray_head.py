"""`gcs-ha ray-head`: start a real Ray head node whose GCS is a gcs-ha cluster.

    gcs-ha ray-head --address HOST:PORT [-- RAY START OPTIONS]

Checks that a gcs-ha replica answers where Ray will really dial, then execs
gcs_ha/ray_head_main.py in a fresh Python (Ray's protos clash with ours); see
docs/ray-integration.md. Errors: ConfigError for options that cannot go with a gcs-ha
head (`--address`, `--port`, `--head` after "--") and when nothing answers where Ray
rewrites ADDRESS to; UnavailableError when nothing answers at ADDRESS; GcsHaError when
something answers there that is not a gcs-ha replica.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from gcs_ha.addresses import as_ray_sees_it, check_address
from gcs_ha.admin_client import AdminClient
from gcs_ha.errors import ConfigError, GcsHaError, UnavailableError
from gcs_ha.managers.kv_manager import SYSTEM_CONFIG_KEY, SYSTEM_CONFIG_NAMESPACE

log = logging.getLogger(__name__)

MAIN_MODULE = "gcs_ha.ray_head_main"
CHECK_TIMEOUT_S = 5.0

# `ray start` options that make no sense here, and why.
_REFUSED = {
    "--address": "--address after '--' means an external Redis to Ray: give gcs-ha's "
    "address as --address before '--'",
    "--port": "--port is the GCS port of a head node, and the GCS is gcs-ha: drop it",
    "--head": "--head is implied: drop it",
}


def check_ray_options(ray_args: Sequence[str]) -> None:
    """Refuse the `ray start` options a gcs-ha head cannot take (ConfigError)."""
    for arg in ray_args:
        reason = _REFUSED.get(arg.split("=", 1)[0])
        if reason is not None:
            raise ConfigError(reason)


def check_gcs_ha(address: str, timeout: float = CHECK_TIMEOUT_S) -> str:
    """Make sure a gcs-ha replica answers at `address`; returns its cluster's leader node
    id, or "" when that replica knows no leader yet (Ray's client will wait for one).

    Raises UnavailableError (nothing answers) or GcsHaError (not a gcs-ha replica).
    """
    check_address(address)
    try:
        with AdminClient(address, timeout) as admin:
            status = admin.status()
    except UnavailableError:
        raise  # "cannot reach ADDRESS: no gcs-ha replica answers there", or a timeout
    except GcsHaError as exc:
        raise GcsHaError(f"{address} is not a gcs-ha replica ({exc})") from None
    return status.leader_node_id


def head_command(address: str, ray_args: Sequence[str]) -> list[str]:
    """The command line of the Ray process (gcs_ha/ray_head_main.py)."""
    return [
        sys.executable,
        "-m",
        MAIN_MODULE,
        f"--address={address}",
        f"--config-namespace={SYSTEM_CONFIG_NAMESPACE.decode()}",
        f"--config-key={SYSTEM_CONFIG_KEY.decode()}",
        "--",
        *ray_args,
    ]


def ray_address(address: str, node_ip: str | None = None) -> str:
    """The address Ray dials for `address`, once a gcs-ha replica answers there.

    ConfigError naming the rewrite when Ray would dial somewhere nothing answers."""
    check_address(address)
    dialed = as_ray_sees_it(address, node_ip)
    try:
        leader = check_gcs_ha(dialed)
    except UnavailableError as exc:
        if dialed == address:
            raise
        raise ConfigError(
            f"Ray rewrites {address} to {dialed} (this machine's IP), and no gcs-ha replica "
            f"answers there ({exc}). Start the replicas so that they listen there (`gcs-ha "
            "up` does by default; `gcs-ha start --listen 0.0.0.0:PORT --gcs-address "
            f"{dialed}`), or give an address Ray keeps, such as another loopback address "
            "(127.0.0.2)"
        ) from None
    if dialed != address:
        log.info("Ray rewrites %s to %s: the head uses %s", address, dialed, dialed)
    if not leader:
        log.warning("%s knows no gcs-ha leader yet; Ray will wait for one", dialed)
    return dialed


def exec_ray_head(address: str, ray_args: Sequence[str]) -> NoReturn:
    """Check the address and options, then become `ray start --head` on gcs-ha."""
    check_ray_options(ray_args)
    cmd = head_command(ray_address(address), ray_args)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)
