"""gcs_ha.secret: reading, generating, and the secret / --insecure rules."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from gcs_ha.errors import ConfigError
from gcs_ha.secret import (
    SECRET_ENV,
    Security,
    decide_security,
    generate_secret_file,
    load_secret,
    read_secret_file,
)

GOOD = "0123456789abcdef0123"


def test_generate_writes_a_private_random_secret(tmp_path: Path) -> None:
    path = tmp_path / "cluster.secret"
    assert generate_secret_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = read_secret_file(path)
    assert len(secret) == 64
    other = tmp_path / "other.secret"
    generate_secret_file(other)
    assert read_secret_file(other) != secret


def test_generate_keeps_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "cluster.secret"
    path.write_text(GOOD)
    path.chmod(0o600)
    assert not generate_secret_file(path)
    assert read_secret_file(path) == GOOD.encode()


def test_file_content_is_stripped(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_text(f"  {GOOD}\n\n")
    path.chmod(0o600)
    assert read_secret_file(path) == GOOD.encode()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read secret file"):
        read_secret_file(tmp_path / "absent")


@pytest.mark.parametrize(
    ("content", "problem"), [("", "is empty"), ("\n  \n", "is empty"), ("short", "too short")]
)
def test_empty_or_short_file(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "s"
    path.write_text(content)
    with pytest.raises(ConfigError, match=problem):
        read_secret_file(path)


def test_readable_by_others_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s"
    path.write_text(GOOD)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="gcs_ha.secret"):
        read_secret_file(path)
    assert "readable by others" in caplog.text


def test_load_prefers_the_file_over_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_text(GOOD)
    path.chmod(0o600)
    assert load_secret(path, {SECRET_ENV: "x" * 40}) == GOOD.encode()
    assert load_secret(None, {SECRET_ENV: "x" * 40}) == b"x" * 40
    assert load_secret(None, {}) is None
    with pytest.raises(ConfigError, match=rf"\${SECRET_ENV} is too short"):
        load_secret(None, {SECRET_ENV: "abc"})


LOOP = ["127.0.0.1:24000", "127.0.0.1:24001", "localhost:24002"]


def test_secret_is_used_as_given() -> None:
    assert decide_security(
        b"s" * 20, False, ["10.0.0.1:1", "10.0.0.2:1"], several=True
    ) == Security(b"s" * 20, False)


def test_several_replicas_need_a_secret_or_insecure() -> None:
    with pytest.raises(ConfigError, match="needs a secret"):
        decide_security(None, False, LOOP, several=True)
    assert decide_security(None, True, LOOP, several=True) == Security(None, True)


def test_insecure_refused_with_a_non_loopback_address() -> None:
    with pytest.raises(ConfigError, match=r"not loopback: 10\.0\.0\.2:24001"):
        decide_security(None, True, ["127.0.0.1:24000", "10.0.0.2:24001"], several=True)


def test_insecure_and_secret_together_refused() -> None:
    with pytest.raises(ConfigError, match="choose one"):
        decide_security(b"s" * 20, True, LOOP, several=True)


def test_lone_loopback_replica_runs_insecure_implicitly() -> None:
    assert decide_security(None, False, ["127.0.0.1:24000"], several=False) == Security(None, True)
    assert decide_security(None, False, ["[::1]:24000"], several=False) == Security(None, True)


def test_lone_remote_replica_needs_a_secret() -> None:
    with pytest.raises(ConfigError, match="not loopback"):
        decide_security(None, False, ["192.168.1.5:24000"], several=False)
    # A hostname other than localhost is not assumed loopback (no DNS lookup).
    with pytest.raises(ConfigError):
        decide_security(None, False, ["myhost:24000"], several=False)
