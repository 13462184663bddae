"""What a function process builds once and keeps: settings, the database, its keys.

Everything comes from the composition root (`holdfast.bootstrap`). A function process checks
its keys when it starts (`start`, called by each `functions/*/main.py` as its module loads):
one it needs and was not given stops it there, with the setting's name, rather than at the
first request. The database, the telemetry and the rest are built on first use, after
gunicorn has started its worker (threads and connections do not survive a fork).
"""

from __future__ import annotations

import gc
import sys
import threading
from dataclasses import dataclass, field

from holdfast import bootstrap, telemetry
from holdfast.adapters.database import Database
from holdfast.adapters.signing import Ed25519Signer
from holdfast.adapters.tokens import TokenVerifier
from holdfast.config import MissingSetting, Settings
from holdfast.domain.actors import Actor
from holdfast.domain.errors import InvariantViolation
from holdfast.entrypoints.ratelimit import RateLimiter

# The keys each function needs: personal data (accounts and transfers seal metadata), the
# checkpoint signer (the ledger seals entries), and token trust (all three serve /v1).
NEEDS: dict[str, dict[str, bool]] = {
    "accounts": {"metadata": True, "tokens": True},
    "transfers": {"metadata": True, "tokens": True},
    "ledger": {"signing": True, "tokens": True},
}
EXIT_CONFIG = 78  # EX_CONFIG (sysexits.h): the configuration is wrong, a restart will not help


@dataclass
class Runtime:
    settings: Settings
    db: Database
    verifier: TokenVerifier
    signer: Ed25519Signer | None = None
    limiter: RateLimiter = field(init=False)  # customers' tokens
    operator_limiter: RateLimiter = field(init=False)  # tokens with the `operator` scope

    def __post_init__(self) -> None:
        settings = self.settings
        self.limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
        self.operator_limiter = RateLimiter(
            settings.operator_rate_limit_per_s, settings.operator_rate_limit_burst
        )

    def limiter_for(self, actor: Actor) -> RateLimiter:
        return self.operator_limiter if actor.is_operator else self.limiter

    @property
    def ledger_signer(self) -> Ed25519Signer:
        if self.signer is None:
            raise InvariantViolation("this process was built without the ledger signing key")
        return self.signer

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        application_name: str,
        *,
        keys: bootstrap.Keys | None = None,
        db: Database | None = None,
    ) -> Runtime:
        """The function `application_name` as configured by `settings` (`keys` and `db`
        when they were built already: at start, or by a test's own fixture)."""
        if keys is None:
            keys = bootstrap.keys(settings, **NEEDS[application_name])
        if db is None:
            db = bootstrap.database(settings, application_name=application_name, cipher=keys.cipher)
        if keys.verifier is None:
            raise InvariantViolation(f"{application_name} needs a token verifier")
        return cls(settings=settings, db=db, verifier=keys.verifier, signer=keys.signer)


_lock = threading.Lock()
_runtime: Runtime | None = None
_started: tuple[Settings, bootstrap.Keys] | None = None


def start(application_name: str) -> None:
    """Check, as the process starts, that this function has every setting it needs; exit
    with a clear message if not. Nothing to do when a runtime is installed (tests)."""
    global _started
    with _lock:
        if _runtime is not None:
            return
        settings = Settings.from_env()
        try:
            if settings.database_url is None:
                raise MissingSetting(
                    "HOLDFAST_DATABASE_URL", "postgresql://... or cockroachdb://..."
                )
            _started = (settings, bootstrap.keys(settings, **NEEDS[application_name]))
        except MissingSetting as error:
            print(f"holdfast {application_name}: cannot start: {error}", file=sys.stderr)
            raise SystemExit(EXIT_CONFIG) from error


def current(application_name: str) -> Runtime:
    """The process-wide runtime, built on first use (after the function process started)."""
    global _runtime
    with _lock:
        if _runtime is None:
            telemetry.configure(application_name)
            settings, keys = _started if _started is not None else (Settings.from_env(), None)
            _runtime = Runtime.from_settings(settings, application_name, keys=keys)
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
