"""Proof of the cluster secret on admin calls (docs/security.md).

Every admin call that changes or costs something carries a one-use credential in gRPC
metadata `AUTH_KEY`: `v1:<unix time, ms>:<nonce, 32 hex>:<HMAC-SHA256, hex>`, keyed by
`admin_key(secret)`. A cluster run without a secret asks for nothing.

Errors: `AdminVerifier.check` raises AdminAuthError (-> UNAUTHENTICATED) naming what
was wrong: missing, malformed, too old or too new (clock skew), replayed, bad signature.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from gcs_ha.errors import AdminAuthError

AUTH_KEY = "gcs-ha-admin-auth"
VERSION = "v1"
MAX_SKEW_S = 60.0
MAX_NONCES = 100_000
_KEY_LABEL = b"gcs-ha admin key v1"

Clock = Callable[[], float]


def admin_key(secret: bytes) -> bytes:
    """The admin HMAC key of a cluster secret."""
    return hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()


def key_fingerprint(key: bytes | None) -> str:
    """A one-way fingerprint of an admin key, i.e. of the cluster secret ("" without one):
    tells two clusters' secrets apart without revealing either (backups carry it)."""
    if key is None:
        return ""
    return hashlib.sha256(b"gcs-ha key fingerprint\0" + key).hexdigest()[:32]


def _signature(key: bytes, method: str, stamp: str, nonce: str, request: bytes) -> str:
    body = hashlib.sha256(request).hexdigest()
    message = f"{VERSION}\n{method}\n{stamp}\n{nonce}\n{body}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def request_bytes(request: Any) -> bytes:
    """The bytes a credential signs: the request, serialized deterministically."""
    data: bytes = request.SerializeToString(deterministic=True)
    return data


def credential(key: bytes, method: str, request: Any, clock: Clock = time.time) -> str:
    """A fresh credential for one call of `method` with `request`."""
    stamp = str(int(clock() * 1000))
    nonce = secrets.token_hex(16)
    mac = _signature(key, method, stamp, nonce, request_bytes(request))
    return f"{VERSION}:{stamp}:{nonce}:{mac}"


class AdminVerifier:
    """Checks credentials for one replica. `key` None: no secret, nothing to check."""

    def __init__(self, key: bytes | None, clock: Clock = time.time) -> None:
        self._key = key
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()  # nonce -> its time (s)

    @property
    def enabled(self) -> bool:
        """Whether calls are checked (the cluster has a secret)."""
        return self._key is not None

    @property
    def fingerprint(self) -> str:
        """`key_fingerprint` of this cluster's key."""
        return key_fingerprint(self._key)

    def check(self, method: str, request: Any, metadata: Iterable[Any] | None) -> None:
        """Accept the call, or raise AdminAuthError saying why not."""
        if self._key is None:
            return
        value = next((item[1] for item in metadata or () if item[0] == AUTH_KEY), None)
        if value is None:
            raise AdminAuthError(
                "this admin call needs the cluster secret (give --secret-file or "
                "GCS_HA_SECRET to the command)"
            )
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        stamp, nonce, signature = _split(text)
        when = int(stamp) / 1000.0
        now = self._clock()
        if abs(now - when) > MAX_SKEW_S:
            raise AdminAuthError(
                f"admin credential is {now - when:+.0f} s off this replica's clock (at most "
                f"{MAX_SKEW_S:.0f} s): check the clocks"
            )
        expected = _signature(self._key, method, stamp, nonce, request_bytes(request))
        if not hmac.compare_digest(expected, signature):
            raise AdminAuthError("admin credential does not match: wrong cluster secret?")
        self._remember(nonce, when, now)

    def _remember(self, nonce: str, when: float, now: float) -> None:
        seen, horizon = self._seen, now - 2 * MAX_SKEW_S
        while seen and (len(seen) >= MAX_NONCES or next(iter(seen.values())) < horizon):
            seen.popitem(last=False)
        if nonce in seen:
            raise AdminAuthError("admin credential was already used (a replayed call)")
        seen[nonce] = when


def _split(text: str) -> tuple[str, str, str]:
    """(time, nonce, mac) of a credential; AdminAuthError when it is not one."""
    parts = text.split(":")
    if (
        len(parts) != 4
        or parts[0] != VERSION
        or not parts[1].isdigit()
        or len(parts[2]) != 32
        or len(parts[3]) != 64
    ):
        raise AdminAuthError(f"malformed admin credential (expected {VERSION}:time:nonce:mac)")
    return parts[1], parts[2], parts[3]
