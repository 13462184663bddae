"""Configuration from the environment, read once per process. Every variable is documented
in the README ("Configuration"); the deployment tests check each is set in the manifests or
has a default here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class MissingSetting(RuntimeError):
    """A process was started without a setting it cannot run without."""

    def __init__(self, variable: str, what: str) -> None:
        super().__init__(f"{variable} is not set: {what}")
        self.variable = variable


class MissingKey(MissingSetting):
    """A key file is not configured, and this is not local development: there is no built-in
    key to fall back on (see holdfast.bootstrap)."""


@dataclass(frozen=True, slots=True)
class Settings:
    home: Path
    database_url: str | None
    jwt_issuer: str
    jwt_audience: str
    jwks_file: Path | None
    jwks_url: str | None
    db_pool_size: int
    fault_serialization_rate: float
    k_sink: str | None
    # The ledger's Ed25519 checkpoint signing key (PKCS#8 PEM); None: a dev key in `home`.
    ledger_signing_key_file: Path | None = None
    # AES-GCM keys for personal data at rest (JSON key file); None: a dev key file in `home`.
    metadata_keys_file: Path | None = None
    # Per-token request rate per function instance (0 turns the limit off): customers' tokens,
    # and tokens with the `operator` scope (a bank's back office and systems) on their own.
    rate_limit_per_s: float = 200.0
    rate_limit_burst: float = 400.0
    operator_rate_limit_per_s: float = 5_000.0
    operator_rate_limit_burst: float = 10_000.0
    # Local development: make missing keys under `home` (set by `holdfast dev` only).
    dev_keys: bool = False
    # Seed of the fault injector's random choices (tests replay a failure with it).
    fault_seed: int | None = None
    # Where `holdfast relay` serves its Prometheus metrics.
    metrics_port: int = 9464

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        home = Path(env.get("HOLDFAST_HOME", ".holdfast")).resolve()
        jwks_file = env.get("HOLDFAST_JWKS_FILE")
        ledger_key = env.get("HOLDFAST_LEDGER_SIGNING_KEY_FILE")
        metadata_keys = env.get("HOLDFAST_METADATA_KEYS_FILE")
        return cls(
            home=home,
            database_url=env.get("HOLDFAST_DATABASE_URL") or None,
            jwt_issuer=env.get("HOLDFAST_JWT_ISSUER", "holdfast-dev"),
            jwt_audience=env.get("HOLDFAST_JWT_AUDIENCE", "holdfast"),
            jwks_file=Path(jwks_file) if jwks_file else None,
            jwks_url=env.get("HOLDFAST_JWKS_URL") or None,
            db_pool_size=int(env.get("HOLDFAST_DB_POOL_SIZE", "8")),
            fault_serialization_rate=float(env.get("HOLDFAST_FAULT_SERIALIZATION_RATE", "0")),
            k_sink=env.get("K_SINK") or None,
            ledger_signing_key_file=Path(ledger_key) if ledger_key else None,
            metadata_keys_file=Path(metadata_keys) if metadata_keys else None,
            rate_limit_per_s=float(env.get("HOLDFAST_RATE_LIMIT_PER_S", "200")),
            rate_limit_burst=float(env.get("HOLDFAST_RATE_LIMIT_BURST", "400")),
            operator_rate_limit_per_s=float(env.get("HOLDFAST_OPERATOR_RATE_LIMIT_PER_S", "5000")),
            operator_rate_limit_burst=float(env.get("HOLDFAST_OPERATOR_RATE_LIMIT_BURST", "10000")),
            dev_keys=env.get("HOLDFAST_DEV_KEYS", "") == "1",
            fault_seed=int(env["HOLDFAST_FAULT_SEED"]) if env.get("HOLDFAST_FAULT_SEED") else None,
            metrics_port=int(env.get("HOLDFAST_METRICS_PORT", "9464")),
        )
