"""The program behind `gcs-ha ray-head`: Ray's own `ray start --head`, with gcs-ha as its GCS.

    python -m gcs_ha.ray_head_main --address HOST:PORT --config-namespace gcs_ha
        --config-key system_config [-- RAY START OPTIONS]

It imports Ray, so it imports nothing from gcs_ha (both define the same protobuf symbols).
It swaps `ray start`'s Node class for `GcsHaHeadNode`, which spawns no gcs_server; the
three methods it changes are described in docs/ray-integration.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import ray._private.node
import ray.experimental.internal_kv
from ray._private import ray_constants
from ray._raylet import GcsClient  # type: ignore[attr-defined]
from ray.scripts import scripts

log = logging.getLogger("gcs_ha.ray_head")

CONNECT_DEADLINE_S = 60.0  # GcsClient itself waits up to 40 s per attempt
RETRY_SLEEP_S = 1.0
SESSION_NAME_KEY = b"session_name"
AUTOSCALER_NAMESPACE = b"__autoscaler"
AUTOSCALER_V2_KEY = b"__autoscaler_v2_enabled"
V2_SETTING = "enable_autoscaler_v2"


def autoscaler_v2_enabled(config: dict[str, Any], environ: dict[str, str]) -> bool:
    """Whether Ray's GCS would run autoscaler v2 with this system config and environment
    (Ray reads RAY_<setting> from the environment first; the system config wins)."""
    value = config.get(V2_SETTING, environ.get(f"RAY_{V2_SETTING}", False))
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true")
    return bool(value)


def connect(address: str, deadline_s: float = CONNECT_DEADLINE_S) -> Any:
    """A Ray GcsClient connected to gcs-ha at `address` (it learnt the cluster id).

    Raises RuntimeError naming the last error when none could be made by the deadline.
    """
    end = time.monotonic() + deadline_s
    while True:
        try:
            client = GcsClient(address=address)
            client.internal_kv_get(b"dummy", None)  # a call through to the leader
            return client
        except Exception as exc:
            if time.monotonic() + RETRY_SLEEP_S >= end:
                raise RuntimeError(f"cannot connect to gcs-ha at {address}: {exc}") from exc
            log.info("gcs-ha at %s not ready yet (%s); retrying", address, exc)
            time.sleep(RETRY_SLEEP_S)


def head_node_class(address: str, config_namespace: bytes, config_key: bytes) -> type[Any]:
    """The Node subclass `ray start --head` should use to run on gcs-ha at `address`."""
    base: type[Any] = ray._private.node.Node

    class GcsHaHeadNode(base):  # type: ignore[misc]
        """A Ray head node whose GCS is gcs-ha (no gcs_server process)."""

        _gcs_ha_client: Any = None

        def _gcs_ha(self) -> Any:
            if self._gcs_ha_client is None:
                self._gcs_ha_client = connect(address)
            return self._gcs_ha_client

        def check_persisted_session_name(self) -> bytes | None:
            if not self.head:
                return super().check_persisted_session_name()  # type: ignore[no-any-return]
            name = self._gcs_ha().internal_kv_get(
                SESSION_NAME_KEY, ray_constants.KV_NAMESPACE_SESSION
            )
            if not name:
                return None
            log.info("keeping session %s, which gcs-ha remembers", bytes(name).decode())
            return bytes(name)

        def _init_gcs_client(self) -> None:
            if not self.head:
                super()._init_gcs_client()
                return
            client = self._gcs_ha()
            self.cluster_id = client.cluster_id
            self._gcs_client = client
            ray.experimental.internal_kv._initialize_internal_kv(client)

        def start_gcs_server(self) -> None:
            """Use gcs-ha instead of spawning a gcs_server; give it the system config."""
            self._gcs_address = address
            self._ray_params.gcs_server_port = int(address.rpartition(":")[2])
            config = json.dumps(self._config)
            client = self.get_gcs_client()
            client.internal_kv_put(config_key, config.encode(), True, config_namespace)
            v2 = autoscaler_v2_enabled(self._config, dict(os.environ))
            client.internal_kv_put(
                AUTOSCALER_V2_KEY, b"1" if v2 else b"0", True, AUTOSCALER_NAMESPACE
            )
            log.info("no gcs_server started: the GCS is gcs-ha at %s", address)

    return GcsHaHeadNode


def run(address: str, config_namespace: bytes, config_key: bytes, ray_args: Sequence[str]) -> int:
    """Run `ray start --head RAY_ARGS` on gcs-ha at `address`; returns the exit code."""
    # `ray start` looks the class up here each time it makes its Node.
    setattr(ray._private.node, "Node", head_node_class(address, config_namespace, config_key))  # noqa: B010
    try:
        scripts.cli.main(args=["start", "--head", *ray_args], prog_name="ray")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """(the launcher's options, the `ray start` options after '--')."""
    args = list(argv)
    ray_args: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, ray_args = args[:cut], args[cut + 1 :]
    parser = argparse.ArgumentParser(prog="gcs_ha.ray_head_main")
    parser.add_argument("--address", required=True, help="gRPC HOST:PORT of a gcs-ha replica")
    parser.add_argument("--config-namespace", required=True)
    parser.add_argument("--config-key", required=True)
    return parser.parse_args(args), ray_args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the options were checked by gcs_ha.ray_head before it ran us."""
    opts, ray_args = parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    namespace, key = opts.config_namespace.encode(), opts.config_key.encode()
    return run(opts.address, namespace, key, ray_args)


if __name__ == "__main__":
    sys.exit(main())
