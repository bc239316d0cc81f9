"""gcs_ha.cli_config on the real command tree: every option from GCS_HA_<OPTION> and from
a TOML file given with --config, in the order command line > environment > file >
default, and the errors for a bad file, key or value. Commands are parsed
(`make_context`), never run, except where they fail before doing anything."""

from __future__ import annotations

import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from gcs_ha import cli_config
from gcs_ha.cli import cli
from gcs_ha.processes import spawn

REQUIRED = ["--node-id=r0", "--data-dir=d", "--raft-address=127.0.0.1:1", "--gcs-address=:2"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(cli_config.ENV_PREFIX) and name != "GCS_HA_SECRET":
            monkeypatch.delenv(name)


def command(path: str) -> click.Command:
    found: click.Command = cli
    for name in path.split():
        assert isinstance(found, click.Group)
        found = found.commands[name]
    return found


def parse(path: str, *args: str) -> dict[str, object]:
    """The option values `gcs-ha PATH ARGS` would run with."""
    with command(path).make_context(path, list(args)) as ctx:
        return dict(ctx.params)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gcs-ha.toml"
    path.write_text(text)
    return path


def error_of(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env)
    assert "Traceback" not in result.output
    return result.exit_code, result.output.strip().splitlines()[-1]


def test_every_option_has_one_variable_shown_in_help() -> None:
    help_text = CliRunner().invoke(cli, ["start", "--help"], terminal_width=200).output
    for name in ("NODE_ID", "PEER", "MAP_SIZE", "ELECTION_TIMEOUT", "SECRET_FILE", "CONFIG"):
        assert f"GCS_HA_{name}" in help_text
    for path in ("status", "join", "leave", "snapshot save", "recover", "up", "ray-head"):
        params = command(path).params
        assert params[0].name == "config"
        for option in params:
            if option.envvar:  # the same name for --address, --data-dir... everywhere
                assert isinstance(option, click.Option)
                expected = "GCS_HA_" + cli_config.long_name(option).upper().replace("-", "_")
                assert option.envvar in (expected, "GCS_HA_CONFIG")


def test_test_tools_and_destructive_targets_stay_on_the_command_line() -> None:
    bench = command("bench kv")
    assert all(not p.envvar for p in [*bench.params, *command("drill").params])
    leave = {p.name: p.envvar for p in command("leave").params}
    assert leave["node_id"] is None and leave["raft_address"] is None
    assert leave["address"] == "GCS_HA_ADDRESS"
    assert {p.name: p.envvar for p in command("recover").params}["yes"] is None


def test_command_line_beats_environment_beats_file_beats_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        tmp_path,
        'node-id = "from-file"\ndata-dir = "/srv/r0"\nraft-address = "10.0.0.1:7379"\n'
        'gcs-address = "10.0.0.1:6379"\ncluster-name = "file"\npeer = ["10.0.0.2:7379"]\n'
        'map-size = "64MiB"\ncompaction-entries = 500\nelection-timeout = "1s"\n'
        "insecure = true\n"
        'address = "10.0.0.9:6379"\n',  # an option of other commands: ignored by start
    )
    monkeypatch.setenv("GCS_HA_NODE_ID", "from-env")
    monkeypatch.setenv("GCS_HA_CLUSTER_NAME", "env")
    monkeypatch.setenv("GCS_HA_PEER", "10.0.0.3:7379  10.0.0.4:7379")
    params = parse("start", f"--config={config}", "--cluster-name=cli")
    assert params["cluster_name"] == "cli"  # command line > environment > file
    assert params["node_id"] == "from-env"  # environment > file
    assert params["peers"] == ("10.0.0.3:7379", "10.0.0.4:7379")  # whitespace-separated
    assert params["data_dir"] == Path("/srv/r0")  # file > required
    assert params["map_size_bytes"] == 64 * 2**20  # file > default
    assert params["compaction_min_entries"] == 500
    assert params["election_timeout_s"] == 1.0
    assert params["insecure"] is True
    assert params["log_level"] == "info"  # default
    assert params["heartbeat_s"] == 0.05


def test_config_from_the_environment_and_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('address = "127.0.0.1:1"\ntimeout = 7\njson = true\n')
    b.write_text('address = "127.0.0.1:2"\n')
    monkeypatch.setenv("GCS_HA_CONFIG", str(a))
    assert parse("status") == {"address": "127.0.0.1:1", "as_json": True, "timeout": 7.0}
    assert parse("status", f"--config={b}")["address"] == "127.0.0.1:2"


def test_flags_and_sizes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GCS_HA_INSECURE", "true")
    monkeypatch.setenv("GCS_HA_DISK_RESERVE", "1GiB")
    params = parse("start", *REQUIRED)
    assert params["insecure"] is True and params["disk_reserve_bytes"] == 2**30
    monkeypatch.setenv("GCS_HA_INSECURE", "0")
    assert parse("start", *REQUIRED)["insecure"] is False


def test_leave_never_takes_its_target_from_the_replicas_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GCS_HA_NODE_ID", "r0")
    monkeypatch.setenv("GCS_HA_RAFT_ADDRESS", "127.0.0.1:7379")
    params = parse("leave", "--address=127.0.0.1:1")
    assert params["node_id"] is None and params["raft_address"] is None
    code, line = error_of("leave", "--address=127.0.0.1:1")
    assert (code, line) == (2, "Error: name the member to remove: --node-id or --raft-address")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('nod-id = "r0"\n', "unknown key 'nod-id' (the keys are the long option names, "
         "e.g. node-id); did you mean node-id?"),
        ('secret = "hunter2hunter2hunter2"\n', "secret: the secret is never a value in a "
         "config file: give the file that holds it as secret-file (mode 0600)"),
        ("yes = true\n", "yes: recover is confirmed on the command line only"),
        ('peer = "10.0.0.2:7379"\n', "peer must be a list of strings, not '10.0.0.2:7379'"),
        ("timeout = true\n", "timeout must be a number, not True"),
        ("compaction-entries = 1.5\n", "compaction-entries must be an integer, not 1.5"),
        ("election-timeout = 0.3\n", 'election-timeout must be a duration ("300ms", '
         '"1.5s"), not 0.3'),
        ('log-level = "loud"\n', "log-level: 'loud' is not one of 'debug', 'info', "
         "'warning', 'error'."),
        ('map-size = "lots"\n', "map-size: not a size: 'lots' (e.g. 8GiB, 512MiB, 1048576)"),
        ('heartbeat = "50"\n', "heartbeat: not a duration: '50' (give a unit: 300ms, 0.3s, 2s)"),
        ("[start]\nnode-id = 1\n", "unknown key 'start'"),
    ],
)  # fmt: skip
def test_a_bad_config_file_is_one_line_naming_file_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    config = write(tmp_path, text)
    code, line = error_of("start", f"--config={config}", *REQUIRED)
    assert code == 2
    assert line.startswith(f"Error: config file {config}: {message}")


def test_a_missing_or_broken_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    assert error_of("status", f"--config={missing}") == (
        2, f"Error: config file {missing} does not exist",
    )  # fmt: skip
    assert error_of("status", env={"GCS_HA_CONFIG": str(missing)})[1].endswith("does not exist")
    broken = write(tmp_path, "node-id = \n")
    code, line = error_of("status", f"--config={broken}")
    assert code == 2 and line.startswith(f"Error: config file {broken} is not valid TOML: ")


def test_a_bad_environment_value_names_the_variable() -> None:
    code, line = error_of("start", *REQUIRED, env={"GCS_HA_MAP_SIZE": "lots"})
    assert code == 2
    assert "GCS_HA_MAP_SIZE" in line and "not a size: 'lots'" in line
    code, line = error_of("start", *REQUIRED, env={"GCS_HA_INSECURE": "maybe"})
    assert code == 2 and "GCS_HA_INSECURE" in line


def test_a_replica_started_by_up_or_a_test_never_inherits_option_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GCS_HA_LISTEN", "0.0.0.0:6379")
    monkeypatch.setenv("GCS_HA_CONFIG", "/etc/gcs-ha.toml")
    monkeypatch.setenv("GCS_HA_RAFT_DIAL", "kept")  # not an option: passed on
    log = tmp_path / "env.log"
    proc = spawn(["env"], log, {"GCS_HA_NODE_ID": "given"})
    assert proc.wait(10) == 0
    lines = set(log.read_text().splitlines())
    assert "GCS_HA_NODE_ID=given" in lines and "GCS_HA_RAFT_DIAL=kept" in lines
    assert not any(ln.startswith(("GCS_HA_LISTEN=", "GCS_HA_CONFIG=")) for ln in lines)


def test_the_systemd_examples_give_a_whole_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy/systemd: `gcs-ha start` with no flags, replica.env.example in its environment
    (its GCS_HA_CONFIG pointed at gcs-ha.toml.example), has every option it needs."""
    deploy = Path(__file__).parents[2] / "deploy" / "systemd"
    for line in (deploy / "replica.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("GCS_HA_CONFIG", str(deploy / "gcs-ha.toml.example"))
    params = parse("start")
    assert (params["node_id"], params["cluster_name"]) == ("r1", "prod-ray")
    assert params["raft_address"] == "10.0.0.11:7379"
    assert params["peers"] == tuple(f"10.0.0.1{i}:7379" for i in (1, 2, 3))
    assert params["secret_file"] == Path("/etc/gcs-ha/cluster.secret")
    service = (deploy / "gcs-ha.service").read_text()
    assert "ExecStart=/opt/gcs-ha/venv/bin/gcs-ha start\n" in service
