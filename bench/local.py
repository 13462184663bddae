"""The benchmarks' processes, built as `holdfast dev` builds its own: through the composition
root, with local development's keys under the benchmark's HOLDFAST_HOME."""

from __future__ import annotations

from pathlib import Path

from holdfast import bootstrap
from holdfast.adapters.database import Database
from holdfast.adapters.signing import Ed25519Signer
from holdfast.config import Settings


def settings(url: str, home: Path | str) -> Settings:
    return Settings.from_env(
        {"HOLDFAST_HOME": str(home), "HOLDFAST_DATABASE_URL": url, "HOLDFAST_DEV_KEYS": "1"}
    )


def database(url: str, home: Path | str, *, pool_size: int, cipher: bool = True) -> Database:
    configured = settings(url, home)
    return bootstrap.database(
        configured,
        application_name="holdfast-bench",
        cipher=bootstrap.metadata_cipher(configured) if cipher else None,
        pool_size=pool_size,
    )


def signer(url: str, home: Path | str) -> Ed25519Signer:
    return bootstrap.ledger_signer(settings(url, home))
