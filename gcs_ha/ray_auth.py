"""Ray's token authentication (RAY_AUTH_MODE=token), resolved as Ray 2.60 resolves it:
`RAY_AUTH_TOKEN`, else the first line of the file `RAY_AUTH_TOKEN_PATH` names, else of
`~/.ray/auth_token` (docs/ray-integration.md). gcs-ha checks it on its gRPC port
(gcs_ha.server.token_auth) and sends it on its own calls to raylets and core workers.

Errors: `load_ray_auth` raises ConfigError for an unknown RAY_AUTH_MODE, for a
RAY_AUTH_TOKEN_PATH that cannot be read or is empty, and when token mode finds no token.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gcs_ha.errors import ConfigError

AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
HEADER = "authorization"
BEARER = "Bearer "
REJECTED = "InvalidAuthToken: Authentication token is missing or incorrect"
MODES = ("disabled", "token")


@dataclass(frozen=True)
class RayAuth:
    """The token of a cluster in token mode; `token` None when authentication is off."""

    token: str | None = None

    @property
    def enabled(self) -> bool:
        return self.token is not None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What to add to an outbound call's metadata (nothing when off)."""
        return () if self.token is None else ((HEADER, BEARER + self.token),)

    def accepts(self, metadata: Iterable[tuple[str, Any]] | None) -> bool:
        """Whether a call with `metadata` may proceed (always, when off)."""
        if self.token is None:
            return True
        expected = (BEARER + self.token).encode()
        for key, value in metadata or ():
            if key == HEADER:
                sent = value if isinstance(value, bytes) else str(value).encode()
                return hmac.compare_digest(sent, expected)
        return False


def load_ray_auth(environ: Mapping[str, str], home: Path | None = None) -> RayAuth:
    """The authentication Ray processes started with `environ` use (see module doc)."""
    mode = environ.get(AUTH_MODE_ENV, "").strip().lower() or "disabled"
    if mode not in MODES:
        raise ConfigError(f"{AUTH_MODE_ENV}={mode!r}: gcs-ha supports {' or '.join(MODES)}")
    if mode == "disabled":
        return RayAuth()
    token = environ.get(TOKEN_ENV, "").strip()
    if token:
        return RayAuth(token)
    path_text = environ.get(TOKEN_PATH_ENV, "")
    if path_text:
        token = _first_line(Path(path_text))
        if not token:
            raise ConfigError(f"{TOKEN_PATH_ENV} is set but {path_text} cannot be read or is empty")
        return RayAuth(token)
    default = (home if home is not None else Path(environ.get("HOME", "."))) / ".ray/auth_token"
    token = _first_line(default)
    if not token:
        raise ConfigError(
            f"{AUTH_MODE_ENV}=token but no token: set {TOKEN_ENV}, or {TOKEN_PATH_ENV} to a "
            f"file holding it, or write it to {default}"
        )
    return RayAuth(token)


def _first_line(path: Path) -> str:
    try:
        with path.open(encoding="utf-8") as f:
            return f.readline().strip()
    except (OSError, UnicodeDecodeError):
        return ""
