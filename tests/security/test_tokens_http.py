"""Attacks on the bearer token, through the real functions: every one is 401 (with
`WWW-Authenticate: Bearer`, problem+json and the security headers) on a read and on a write,
and the write changes nothing. tests/unit/test_tokens.py covers the verifier alone."""

from __future__ import annotations

import base64
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from holdfast.adapters.tokens import DEV_KEY_ID, DevIssuer
from holdfast.entrypoints.web import SECURITY_HEADERS
from tests.conftest import snapshot
from tests.security.conftest import CUSTOMER, Http, World, new_id

ISSUER, AUDIENCE = "holdfast-test", "holdfast"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "alice",
        "scope": CUSTOMER + " operator",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def signed(issuer: DevIssuer, headers: dict[str, Any] | None = None, **overrides: Any) -> str:
    return jwt.encode(
        claims(**overrides),
        issuer.private_key(),
        algorithm="EdDSA",
        headers={"kid": DEV_KEY_ID, **(headers or {})},
    )


def public_pem(issuer: DevIssuer) -> bytes:
    return (
        issuer.private_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def hmac_token(secret: bytes, alg: str = "HS256") -> str:
    signing_input = b64({"alg": alg, "kid": DEV_KEY_ID, "typ": "JWT"}) + "." + b64(claims())
    mac = hmac.new(secret, signing_input.encode(), "sha256").digest()
    return signing_input + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def attacks(issuer: DevIssuer) -> dict[str, str | None]:
    """Authorization header values, each an attack (None: no header at all)."""
    foreign = Ed25519PrivateKey.generate()
    foreign_jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(foreign.public_key()))
    ec_key = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    good = signed(issuer)
    header, payload, signature = good.split(".")
    return {
        "no header": None,
        "empty bearer": "Bearer ",
        "basic auth": "Basic YWxpY2U6c2VjcmV0",
        "garbage": "Bearer not.a.token",
        "token without scheme": good,
        "alg none": "Bearer " + b64({"alg": "none", "kid": DEV_KEY_ID}) + "." + b64(claims()) + ".",
        "alg none, signature kept": f"Bearer {b64({'alg': 'none'})}.{payload}.{signature}",
        "algorithm confusion: HS256 keyed by the public key": "Bearer "
        + hmac_token(public_pem(issuer)),
        "algorithm confusion: HS256 keyed by empty secret": "Bearer " + hmac_token(b""),
        "foreign key with the trusted kid": "Bearer "
        + jwt.encode(claims(), foreign, algorithm="EdDSA", headers={"kid": DEV_KEY_ID}),
        "foreign key, its jwk embedded in the header": "Bearer "
        + jwt.encode(
            claims(), foreign, algorithm="EdDSA", headers={"kid": "x", "jwk": foreign_jwk}
        ),
        "foreign key, jku to the attacker": "Bearer "
        + jwt.encode(
            claims(),
            foreign,
            algorithm="EdDSA",
            headers={"kid": DEV_KEY_ID, "jku": "http://127.0.0.1:9/jwks.json"},
        ),
        "kid path traversal": "Bearer "
        + jwt.encode(claims(), foreign, algorithm="EdDSA", headers={"kid": "../../dev/null"}),
        "ES256 by an unknown key": "Bearer "
        + jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": DEV_KEY_ID}),
        "expired": "Bearer " + signed(issuer, exp=now - 120, iat=now - 600),
        "not yet valid": "Bearer " + signed(issuer, nbf=now + 600),
        "wrong issuer": "Bearer " + signed(issuer, iss="https://evil.example"),
        "wrong audience": "Bearer " + signed(issuer, aud="another-service"),
        "audience list without ours": "Bearer " + signed(issuer, aud=["a", "b"]),
        "no exp": "Bearer " + signed(issuer, exp=None),
        "no iat": "Bearer " + signed(issuer, iat=None),
        "no sub": "Bearer " + signed(issuer, sub=None),
        "empty sub": "Bearer " + signed(issuer, sub=""),
        "no iss": "Bearer " + signed(issuer, iss=None),
        "no aud": "Bearer " + signed(issuer, aud=None),
        "scope as a list": "Bearer " + signed(issuer, scope=["operator"]),
        "tampered payload": f"Bearer {header}.{b64(claims(sub='bob'))}.{signature}",
        "signature of another token": "Bearer "
        + ".".join([header, payload, signed(issuer, sub="bob").split(".")[2]]),
        "truncated signature": "Bearer " + good[:-4],
    }


NAMES = [
    "no header",
    "empty bearer",
    "basic auth",
    "garbage",
    "token without scheme",
    "alg none",
    "alg none, signature kept",
    "algorithm confusion: HS256 keyed by the public key",
    "algorithm confusion: HS256 keyed by empty secret",
    "foreign key with the trusted kid",
    "foreign key, its jwk embedded in the header",
    "foreign key, jku to the attacker",
    "kid path traversal",
    "ES256 by an unknown key",
    "expired",
    "not yet valid",
    "wrong issuer",
    "wrong audience",
    "audience list without ours",
    "no exp",
    "no iat",
    "no sub",
    "empty sub",
    "no iss",
    "no aud",
    "scope as a list",
    "tampered payload",
    "signature of another token",
    "truncated signature",
]


def send(http: Http, method: str, path: str, value: str | None, body: Any = None) -> Any:
    headers = {} if value is None else {"Authorization": value}
    if body is None:
        return http.client.open(path, method=method, headers=headers)
    return http.client.open(path, method=method, headers=headers, json=body)


def test_the_names_cover_every_attack(issuer: DevIssuer) -> None:
    assert sorted(NAMES) == sorted(attacks(issuer))


def test_a_valid_token_is_the_control(http: Http, world: World, issuer: DevIssuer) -> None:
    answer = send(http, "GET", f"/v1/accounts/{world.alice}", "Bearer " + signed(issuer))
    assert answer.status_code == 200


@pytest.mark.parametrize("name", NAMES)
def test_a_token_attack_is_401_on_reads_and_writes(
    name: str, http: Http, world: World, issuer: DevIssuer, db
) -> None:
    value = attacks(issuer)[name]
    before = snapshot(db)
    reserve = {
        "id": new_id(),
        "currency": "EUR",
        "debit_account_id": world.alice,
        "credit_account_id": world.bank,
        "amount": 1,
        "immediate": True,
    }
    answers = [
        send(http, "GET", f"/v1/accounts/{world.alice}", value),
        send(http, "POST", "/v1/transfers", value, reserve),
        send(http, "POST", f"/v1/transfers/{world.alice_held}/confirm", value),
        send(http, "GET", "/v1/ledger/export", value),
    ]
    for answer in answers:
        assert answer.status_code == 401, (name, answer.request.path, answer.data[:200])
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert answer.headers["Content-Type"] == "application/problem+json"
        assert answer.get_json()["code"] == "unauthorized"
        for header, expected in SECURITY_HEADERS.items():
            assert answer.headers.get(header) == expected
        assert "alice" not in answer.get_data(as_text=True)
    assert snapshot(db) == before
