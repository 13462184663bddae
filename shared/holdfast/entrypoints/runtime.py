"""What a function process builds once and keeps: settings, the database, the token verifier."""

from __future__ import annotations

import gc
import json
import threading
from dataclasses import dataclass, field

from holdfast import telemetry
from holdfast.adapters.crypto import MetadataCipher
from holdfast.adapters.database import Database, FaultInjector, create_engine
from holdfast.adapters.tokens import DevIssuer, TokenVerifier
from holdfast.config import Settings
from holdfast.entrypoints.ratelimit import RateLimiter


@dataclass
class Runtime:
    settings: Settings
    db: Database
    verifier: TokenVerifier
    limiter: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.settings.rate_limit_per_s, self.settings.rate_limit_burst)

    @classmethod
    def from_settings(cls, settings: Settings, application_name: str = "holdfast") -> Runtime:
        if settings.database_url is None:
            raise RuntimeError(
                "HOLDFAST_DATABASE_URL is not set (holdfast dev sets it for the functions)"
            )
        engine = create_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            application_name=application_name,
        )
        faults = (
            FaultInjector(settings.fault_serialization_rate)
            if settings.fault_serialization_rate > 0
            else None
        )
        return cls(
            settings=settings, db=Database(engine, faults=faults), verifier=verifier(settings)
        )


def metadata_cipher(settings: Settings) -> MetadataCipher:
    if settings.metadata_keys_file is not None:
        return MetadataCipher.from_file(settings.metadata_keys_file)
    return MetadataCipher.dev(settings.home)  # local development: a key file in HOLDFAST_HOME


def verifier(settings: Settings) -> TokenVerifier:
    if settings.jwks_url:
        return TokenVerifier.from_url(
            settings.jwks_url, issuer=settings.jwt_issuer, audience=settings.jwt_audience
        )
    if settings.jwks_file:
        jwks = json.loads(settings.jwks_file.read_text())
    else:  # local development: trust the dev issuer kept in HOLDFAST_HOME
        jwks = DevIssuer(
            settings.home, issuer=settings.jwt_issuer, audience=settings.jwt_audience
        ).jwks()
    return TokenVerifier(jwks, issuer=settings.jwt_issuer, audience=settings.jwt_audience)


_lock = threading.Lock()
_runtime: Runtime | None = None


def current(application_name: str) -> Runtime:
    """The process-wide runtime, built on first use (after the function process started)."""
    global _runtime
    with _lock:
        if _runtime is None:
            telemetry.configure(application_name)
            _runtime = Runtime.from_settings(Settings.from_env(), application_name)
            # Long-lived objects made so far (modules, the engine) need no more collecting,
            # and young-generation passes less often shorten the pauses requests see.
            gc.freeze()
            gc.set_threshold(20_000, 20, 20)
        return _runtime


def install(runtime: Runtime | None) -> None:
    """Replace the process-wide runtime (tests)."""
    global _runtime
    with _lock:
        _runtime = runtime
