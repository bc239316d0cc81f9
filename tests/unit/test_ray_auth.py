"""Ray's token authentication settings, resolved as Ray 2.60 resolves them."""

from __future__ import annotations

from pathlib import Path

import pytest

from gcs_ha.errors import ConfigError
from gcs_ha.ray_auth import REJECTED, RayAuth, load_ray_auth


def test_off_unless_token_mode(tmp_path: Path) -> None:
    assert load_ray_auth({}, tmp_path) == RayAuth()
    disabled = {"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "t"}
    assert load_ray_auth(disabled, tmp_path) == RayAuth()
    assert not RayAuth().enabled and RayAuth().metadata() == ()
    assert RayAuth().accepts(None)


def test_token_sources_in_rays_order(tmp_path: Path) -> None:
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("  from-home \nsecond line\n")
    path = tmp_path / "token"
    path.write_text("from-path\n")
    env = {"RAY_AUTH_MODE": "TOKEN", "RAY_AUTH_TOKEN": " from-env "}
    env["RAY_AUTH_TOKEN_PATH"] = str(path)
    assert load_ray_auth(env, tmp_path).token == "from-env"
    env["RAY_AUTH_TOKEN"] = ""
    assert load_ray_auth(env, tmp_path).token == "from-path"
    del env["RAY_AUTH_TOKEN_PATH"]
    assert load_ray_auth(env, tmp_path).token == "from-home"
    assert load_ray_auth({"RAY_AUTH_MODE": "token", "HOME": str(tmp_path)}).token == "from-home"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RAY_AUTH_MODE": "kerberos"}, "supports disabled or token"),
        ({"RAY_AUTH_MODE": "token"}, "no token: set RAY_AUTH_TOKEN"),
        ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": "/nonexistent"}, "cannot be read"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_ray_auth(env, tmp_path)


def test_only_the_exact_bearer_token_is_accepted() -> None:
    auth = RayAuth("s3cret")
    assert auth.metadata() == (("authorization", "Bearer s3cret"),)
    assert auth.accepts([("x", "y"), ("authorization", "Bearer s3cret")])
    assert auth.accepts([("authorization", b"Bearer s3cret")])
    bad: list[list[tuple[str, str]] | None] = [
        None,
        [],
        [("authorization", "s3cret")],
        [("authorization", "Bearer s3cre")],
        [("authorization", "Bearer s3cret ")],
        [("x-ray-authorization", "Bearer s3cret")],
    ]
    for metadata in bad:
        assert not auth.accepts(metadata)
    assert REJECTED.startswith("InvalidAuthToken: ")
