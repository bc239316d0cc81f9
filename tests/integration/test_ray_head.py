"""`gcs-ha ray-head` before it execs Ray: options, the address check, the command line.

(The Ray side, gcs_ha/ray_head_main.py, imports Ray and so runs only in its own process:
tests/e2e/test_real_ray.py starts real head nodes with it.)
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health, health_pb2_grpc

from gcs_ha.cli import cli
from gcs_ha.errors import ConfigError, GcsHaError, UnavailableError
from gcs_ha.ray_head import MAIN_MODULE, check_gcs_ha, check_ray_options, head_command

NOTHING_THERE = "127.0.0.3:16097"  # not 127.0.0.1: Ray (and ray-head) would rewrite that
NOT_GCS_HA = "127.0.0.1:16098"


@pytest.fixture(scope="module")
def plain_grpc_server() -> Iterator[str]:
    """A gRPC server with only the health service: something that is not gcs-ha."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    server.add_insecure_port(NOT_GCS_HA)
    server.start()
    yield NOT_GCS_HA
    server.stop(0)


@pytest.mark.parametrize("arg", ["--address=x:1", "--port=6379", "--port", "--head"])
def test_options_that_make_no_sense_on_gcs_ha_are_refused(arg: str) -> None:
    with pytest.raises(ConfigError):
        check_ray_options(["--num-cpus=1", arg])


def test_other_ray_start_options_pass() -> None:
    check_ray_options(["--num-cpus=1", "--block", "--temp-dir=/tmp/x", "--dashboard-port=1"])


def test_nothing_listening_is_unavailable() -> None:
    with pytest.raises(UnavailableError, match=re.escape(f"cannot reach {NOTHING_THERE}")):
        check_gcs_ha(NOTHING_THERE, timeout=2)


def test_a_server_without_the_admin_service_is_not_gcs_ha(plain_grpc_server: str) -> None:
    with pytest.raises(GcsHaError, match="is not a gcs-ha replica"):
        check_gcs_ha(plain_grpc_server, timeout=2)


def test_bad_address_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        check_gcs_ha("127.0.0.1", timeout=2)


def test_head_command_runs_ray_in_its_own_python_with_the_config_key() -> None:
    cmd = head_command("h:1", ["--num-cpus=1", "--block"])
    assert cmd[:3] == [sys.executable, "-m", MAIN_MODULE]
    assert cmd[3:] == [
        "--address=h:1", "--config-namespace=gcs_ha", "--config-key=system_config",
        "--", "--num-cpus=1", "--block",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--address", NOTHING_THERE, "--", "--num-cpus=1"], 1, "cannot reach 127.0.0.3:16097"),
        (["--address", NOTHING_THERE, "--", "--port=6380"], 2, "--port is the GCS port"),
        (["--address", "nowhere", "--", "--num-cpus=1"], 2, "bad address 'nowhere'"),
        (["--", "--num-cpus=1"], 2, "Missing option '--address'"),
    ],
)
def test_cli_errors_are_one_line(args: list[str], code: int, message: str) -> None:
    result = CliRunner().invoke(cli, ["ray-head", *args])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_which_autoscaler_the_head_announces() -> None:
    # In a process of its own: gcs_ha.ray_head_main imports Ray.
    script = """
from gcs_ha.ray_head_main import autoscaler_v2_enabled as v2
cases = [
    ({}, {}), ({"enable_autoscaler_v2": True}, {}), ({}, {"RAY_enable_autoscaler_v2": "1"}),
    ({}, {"RAY_enable_autoscaler_v2": "true"}), ({"enable_autoscaler_v2": False},
    {"RAY_enable_autoscaler_v2": "1"}), ({"enable_autoscaler_v2": "0"}, {}),
]
print([v2(config, env) for config, env in cases])
"""
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip().splitlines()[-1] == "[False, True, True, True, False, False]"
