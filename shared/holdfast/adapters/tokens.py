"""Bearer tokens: verification (JWKS, EdDSA or ES256) and the local dev issuer.

Verification pins the algorithm to the key's type (no `alg: none`, no algorithm confusion),
requires `exp`, `iat`, `sub`, `iss` and `aud`, and checks issuer and audience. Keys come from a
JWKS file or URL in production; `holdfast dev` uses a dev issuer key kept in HOLDFAST_HOME.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from holdfast.adapters.signing import private_pem
from holdfast.domain.actors import Actor
from holdfast.domain.errors import Unauthorized

ALGORITHMS = ("EdDSA", "ES256")
SCOPES = frozenset(
    {
        "accounts:read",
        "accounts:write",
        "transfers:read",
        "transfers:write",
        "ledger:read",
        "operator",
    }
)
DEV_KEY_ID = "holdfast-dev-1"
LEEWAY_S = 30


class TokenVerifier:
    def __init__(self, jwks: dict[str, Any], *, issuer: str, audience: str) -> None:
        self.keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id}
        self.issuer = issuer
        self.audience = audience
        self._cache: OrderedDict[str, tuple[Actor, float]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Path, *, issuer: str, audience: str) -> TokenVerifier:
        jwks: dict[str, Any] = json.loads(path.read_text())
        return cls(jwks, issuer=issuer, audience=audience)

    @classmethod
    def from_url(cls, url: str, *, issuer: str, audience: str) -> TokenVerifier:
        client = jwt.PyJWKClient(url, cache_keys=True, timeout=5)
        jwks: dict[str, Any] = client.fetch_data()
        return cls(jwks, issuer=issuer, audience=audience)

    def verify(self, header_value: str | None) -> Actor:
        if not header_value or not header_value.startswith("Bearer "):
            raise Unauthorized("a bearer token is required")
        token = header_value.removeprefix("Bearer ").strip()
        cached = self._cache_get(token)
        if cached is not None:
            return cached
        actor, expires = self._verify(token)
        self._cache_put(token, actor, expires)
        return actor

    # A client sends the same token with every request: keep the answer of a verification
    # until the token's own expiry (a bounded, thread-safe LRU; only verified tokens enter).
    CACHE_MAX = 4096

    def _cache_get(self, token: str) -> Actor | None:
        with self._lock:
            found = self._cache.get(token)
            if found is None:
                return None
            actor, expires = found
            if time.time() > expires + LEEWAY_S:
                del self._cache[token]
                return None
            self._cache.move_to_end(token)
            return actor

    def _cache_put(self, token: str, actor: Actor, expires: float) -> None:
        with self._lock:
            self._cache[token] = (actor, expires)
            while len(self._cache) > self.CACHE_MAX:
                self._cache.popitem(last=False)

    def _verify(self, token: str) -> tuple[Actor, float]:
        try:
            header = jwt.get_unverified_header(token)
            key = self.keys.get(str(header.get("kid")))
            if key is None or header.get("alg") not in ALGORITHMS:
                raise Unauthorized("the token is not signed by a trusted key")
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.PyJWTError as error:
            raise Unauthorized(f"invalid token: {error}") from error
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise Unauthorized("invalid token: empty subject")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in sub) or len(sub) > 256:
            raise Unauthorized("invalid token: the subject must be short printable text")
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise Unauthorized("invalid token: scope must be a string")
        return Actor(sub=sub, scopes=frozenset(scope.split()) & SCOPES), float(claims["exp"])


class DevIssuer:
    """The local issuer of `holdfast token`: an Ed25519 key under HOLDFAST_HOME/keys."""

    def __init__(self, home: Path, *, issuer: str, audience: str) -> None:
        self.path = home / "keys" / "dev-issuer-ed25519.pem"
        self.issuer = issuer
        self.audience = audience

    def private_key(self) -> Ed25519PrivateKey:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            key = Ed25519PrivateKey.generate()
            pem = private_pem(key)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_bytes(pem)
            tmp.chmod(0o600)
            tmp.replace(self.path)
        loaded = serialization.load_pem_private_key(self.path.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ValueError(f"{self.path} is not an Ed25519 key")
        return loaded

    def jwks(self) -> dict[str, Any]:
        public = self.private_key().public_key()
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(public))
        jwk.update({"kid": DEV_KEY_ID, "alg": "EdDSA", "use": "sig"})
        return {"keys": [jwk]}

    def write_jwks(self) -> Path:
        path = self.path.parent / "dev-jwks.json"
        path.write_text(json.dumps(self.jwks()))
        return path

    def issue(self, sub: str, scope: str, ttl_s: int = 3600) -> str:
        now = int(time.time())
        claims = {
            "sub": sub,
            "scope": scope,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_s,
        }
        return jwt.encode(
            claims, self.private_key(), algorithm="EdDSA", headers={"kid": DEV_KEY_ID}
        )
