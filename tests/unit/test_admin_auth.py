"""Admin credentials: one call, one request, one use, within the clock skew."""

from __future__ import annotations

import pytest

from gcs_ha import admin_auth
from gcs_ha.admin_auth import AUTH_KEY, AdminVerifier, admin_key, credential
from gcs_ha.errors import AdminAuthError
from gcs_ha.proto import admin_pb2

KEY = admin_key(b"0123456789abcdef-cluster-secret")
NOW = 1_800_000_000.0


def _clock(t: float = NOW) -> admin_auth.Clock:
    return lambda: t


def _meta(value: str) -> list[tuple[str, str]]:
    return [("user-agent", "x"), (AUTH_KEY, value)]


def test_a_fresh_credential_is_accepted_once() -> None:
    request = admin_pb2.RemoveMemberRequest(node_id="r2")
    verifier = AdminVerifier(KEY, _clock())
    value = credential(KEY, "RemoveMember", request, _clock())
    verifier.check("RemoveMember", request, _meta(value))
    with pytest.raises(AdminAuthError, match="already used"):
        verifier.check("RemoveMember", request, _meta(value))


def test_a_credential_binds_the_method_and_the_request() -> None:
    request = admin_pb2.RemoveMemberRequest(node_id="r2")
    verifier = AdminVerifier(KEY, _clock())
    value = credential(KEY, "RemoveMember", request, _clock())
    with pytest.raises(AdminAuthError, match="does not match"):
        verifier.check("Shutdown", admin_pb2.ShutdownRequest(), _meta(value))
    with pytest.raises(AdminAuthError, match="does not match"):
        verifier.check("RemoveMember", admin_pb2.RemoveMemberRequest(node_id="r0"), _meta(value))
    verifier.check("RemoveMember", request, _meta(value))  # the refusals did not spend it


def test_another_secret_is_refused() -> None:
    other = admin_key(b"another-secret-of-16-chars-or-more")
    request = admin_pb2.ShutdownRequest()
    value = credential(other, "Shutdown", request, _clock())
    with pytest.raises(AdminAuthError, match="wrong cluster secret"):
        AdminVerifier(KEY, _clock()).check("Shutdown", request, _meta(value))


@pytest.mark.parametrize("offset", [-61.0, 61.0])
def test_a_credential_outside_the_skew_is_refused(offset: float) -> None:
    request = admin_pb2.CompactRequest()
    value = credential(KEY, "Compact", request, _clock(NOW + offset))
    with pytest.raises(AdminAuthError, match="check the clocks"):
        AdminVerifier(KEY, _clock()).check("Compact", request, _meta(value))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "v1",
        "v2:1:" + "0" * 32 + ":" + "0" * 64,
        "v1:abc:" + "0" * 32 + ":" + "0" * 64,
        "v1:1:short:" + "0" * 64,
        "v1:1:" + "0" * 32 + ":" + "0" * 63,
        "v1:1:" + "0" * 32 + ":" + "0" * 64 + ":extra",
    ],
)
def test_malformed_credentials_are_refused(value: str) -> None:
    with pytest.raises(AdminAuthError, match="malformed"):
        AdminVerifier(KEY, _clock()).check("Shutdown", admin_pb2.ShutdownRequest(), _meta(value))


def test_a_missing_credential_names_the_remedy() -> None:
    with pytest.raises(AdminAuthError, match="--secret-file or GCS_HA_SECRET"):
        AdminVerifier(KEY).check("Shutdown", admin_pb2.ShutdownRequest(), [("x", "y")])
    with pytest.raises(AdminAuthError):
        AdminVerifier(KEY).check("Shutdown", admin_pb2.ShutdownRequest(), None)


def test_bytes_metadata_is_read_too() -> None:
    request = admin_pb2.ShutdownRequest()
    value = credential(KEY, "Shutdown", request).encode()
    AdminVerifier(KEY).check("Shutdown", request, [(AUTH_KEY, value)])


def test_without_a_secret_nothing_is_checked() -> None:
    verifier = AdminVerifier(None)
    assert not verifier.enabled
    verifier.check("Shutdown", admin_pb2.ShutdownRequest(), None)


def test_the_nonce_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin_auth, "MAX_NONCES", 10)
    verifier = AdminVerifier(KEY, _clock())
    request = admin_pb2.ShutdownRequest()
    first = credential(KEY, "Shutdown", request, _clock())
    verifier.check("Shutdown", request, _meta(first))
    for _ in range(30):
        verifier.check("Shutdown", request, _meta(credential(KEY, "Shutdown", request, _clock())))
    assert len(verifier._seen) <= 10


def test_old_nonces_are_forgotten_once_too_old_to_be_accepted() -> None:
    t = [NOW]
    verifier = AdminVerifier(KEY, lambda: t[0])
    request = admin_pb2.ShutdownRequest()
    verifier.check("Shutdown", request, _meta(credential(KEY, "Shutdown", request, _clock())))
    t[0] = NOW + 3 * admin_auth.MAX_SKEW_S
    late = credential(KEY, "Shutdown", request, lambda: t[0])
    verifier.check("Shutdown", request, _meta(late))
    assert len(verifier._seen) == 1


def test_the_admin_key_is_not_the_secret() -> None:
    secret = b"0123456789abcdef-cluster-secret"
    assert admin_key(secret) != secret
    assert admin_key(secret) == KEY
    assert len(KEY) == 32
