"""Bearer token verification: every attack on the token is a 401."""

from __future__ import annotations

import base64
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from holdfast.adapters.tokens import DEV_KEY_ID, DevIssuer, TokenVerifier
from holdfast.domain.errors import Unauthorized


@pytest.fixture
def issuer(tmp_path: Path) -> DevIssuer:
    return DevIssuer(tmp_path, issuer="iss", audience="aud")


@pytest.fixture
def verifier(issuer: DevIssuer) -> TokenVerifier:
    return TokenVerifier(issuer.jwks(), issuer="iss", audience="aud")


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "alice",
        "scope": "accounts:read",
        "iss": "iss",
        "aud": "aud",
        "iat": now,
        "exp": now + 60,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def signed(issuer: DevIssuer, **overrides: Any) -> str:
    return jwt.encode(
        claims(**overrides), issuer.private_key(), algorithm="EdDSA", headers={"kid": DEV_KEY_ID}
    )


def test_a_valid_token_gives_the_subject_and_known_scopes(
    issuer: DevIssuer, verifier: TokenVerifier
) -> None:
    actor = verifier.verify("Bearer " + signed(issuer, scope="accounts:read operator bogus"))
    assert actor.sub == "alice"
    assert actor.scopes == {"accounts:read", "operator"}


def test_the_dev_issuer_key_survives_restarts(tmp_path: Path) -> None:
    first = DevIssuer(tmp_path, issuer="iss", audience="aud").jwks()
    assert DevIssuer(tmp_path, issuer="iss", audience="aud").jwks() == first


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def hs256(secret: bytes) -> str:
    """A token MACed with the public key, for verifiers that trust the header's alg."""
    signing_input = b64({"alg": "HS256", "kid": DEV_KEY_ID, "typ": "JWT"}) + "." + b64(claims())
    mac = hmac.new(secret, signing_input.encode(), "sha256").digest()
    return signing_input + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def tampered(token: str) -> str:
    header, _, signature = token.split(".")
    return ".".join([header, b64(claims(scope="operator")), signature])


def attacks(issuer: DevIssuer) -> dict[str, str | None]:
    foreign = Ed25519PrivateKey.generate()
    ec_key = ec.generate_private_key(ec.SECP256R1())
    public_pem = (
        issuer.private_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return {
        "missing": None,
        "not bearer": "Basic YWxpY2U6c2VjcmV0",
        "garbage": "Bearer not.a.token",
        "alg none": "Bearer " + b64({"alg": "none", "kid": DEV_KEY_ID}) + "." + b64(claims()) + ".",
        "foreign key same kid": "Bearer "
        + jwt.encode(claims(), foreign, algorithm="EdDSA", headers={"kid": DEV_KEY_ID}),
        "unknown kid": "Bearer "
        + jwt.encode(claims(), foreign, algorithm="EdDSA", headers={"kid": "other"}),
        "algorithm confusion (HS256 keyed by the public key)": "Bearer " + hs256(public_pem),
        "ES256 by an unknown key": "Bearer "
        + jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": DEV_KEY_ID}),
        "expired": "Bearer "
        + signed(issuer, exp=int(time.time()) - 120, iat=int(time.time()) - 300),
        "not yet valid": "Bearer " + signed(issuer, nbf=int(time.time()) + 600),
        "wrong issuer": "Bearer " + signed(issuer, iss="evil"),
        "wrong audience": "Bearer " + signed(issuer, aud="other"),
        "no exp": "Bearer " + signed(issuer, exp=None),
        "no sub": "Bearer " + signed(issuer, sub=None),
        "empty sub": "Bearer " + signed(issuer, sub=""),
        "no aud": "Bearer " + signed(issuer, aud=None),
        "scope not a string": "Bearer " + signed(issuer, scope=["operator"]),
        "tampered payload": "Bearer " + tampered(signed(issuer)),
    }


@pytest.mark.parametrize(
    "name",
    [
        "missing",
        "not bearer",
        "garbage",
        "alg none",
        "foreign key same kid",
        "unknown kid",
        "algorithm confusion (HS256 keyed by the public key)",
        "ES256 by an unknown key",
        "expired",
        "not yet valid",
        "wrong issuer",
        "wrong audience",
        "no exp",
        "no sub",
        "empty sub",
        "no aud",
        "scope not a string",
        "tampered payload",
    ],
)
def test_attacks_on_the_token_are_refused(
    name: str, issuer: DevIssuer, verifier: TokenVerifier
) -> None:
    with pytest.raises(Unauthorized):
        verifier.verify(attacks(issuer)[name])


def test_a_remembered_token_still_expires(
    issuer: DevIssuer, verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "Bearer " + signed(issuer)
    assert verifier.verify(token).sub == "alice"
    assert verifier.verify(token).sub == "alice"  # answered from the cache
    raw = token.removeprefix("Bearer ")
    assert verifier._cache_get(raw) is not None
    later = time.time() + 3600  # past exp: the cache no longer answers, the full check does
    monkeypatch.setattr(time, "time", lambda: later)
    assert verifier._cache_get(raw) is None


def test_only_verified_tokens_are_remembered(issuer: DevIssuer, verifier: TokenVerifier) -> None:
    forged = "Bearer " + tampered(signed(issuer))
    for _ in range(2):
        with pytest.raises(Unauthorized):
            verifier.verify(forged)
    assert len(verifier._cache) == 0
