"""The composition root: the one place where settings become objects.

Every process builds its database, metadata cipher, checkpoint signer and token verifier here:
each function (through `entrypoints.runtime`), the relay, the CLI, `holdfast dev`, and the
tests, which call these same functions with settings of their own (key files in a temporary
folder), so what the tests exercise is what ships.

Keys, and what happens without them:

    key                       setting                              without it
    personal data (AES-GCM)   HOLDFAST_METADATA_KEYS_FILE          MissingKey
    checkpoint signing        HOLDFAST_LEDGER_SIGNING_KEY_FILE     MissingKey
    token trust (JWKS)        HOLDFAST_JWKS_FILE or _JWKS_URL      MissingKey

There is no built-in key. Only local development makes keys of its own, under HOLDFAST_HOME:
the processes `holdfast dev` starts (it sets HOLDFAST_DEV_KEYS=1) and CLI commands working on
the embedded database (no HOLDFAST_DATABASE_URL). A configured file always wins.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from holdfast.adapters.crypto import MetadataCipher, dev_key_file
from holdfast.adapters.database import (
    Database,
    EmbeddedPostgres,
    FaultInjector,
    create_engine,
    migrate,
)
from holdfast.adapters.signing import Ed25519Signer, load_dev_signer, load_signer
from holdfast.adapters.tokens import DevIssuer, TokenVerifier
from holdfast.config import MissingKey, MissingSetting, Settings

__all__ = [
    "Keys",
    "MissingKey",
    "database",
    "dev_keys_allowed",
    "keys",
    "ledger_signer",
    "local_database",
    "metadata_cipher",
    "metadata_keys_file",
    "token_verifier",
]


def dev_keys_allowed(settings: Settings) -> bool:
    """Local development only: `holdfast dev`'s processes, or the CLI on the embedded database."""
    return settings.dev_keys or settings.database_url is None


def metadata_cipher(settings: Settings) -> MetadataCipher:
    """The keys that seal account and transfer metadata (personal data) at rest."""
    if settings.metadata_keys_file is None and dev_keys_allowed(settings):
        return MetadataCipher.dev(settings.home)
    return MetadataCipher.from_file(metadata_keys_file(settings))


def metadata_keys_file(settings: Settings) -> Path:
    """Where the metadata keys are kept: the configured file, or (dev) the one in home."""
    if settings.metadata_keys_file is not None:
        return settings.metadata_keys_file
    if dev_keys_allowed(settings):
        return dev_key_file(settings.home)
    raise MissingKey(
        "HOLDFAST_METADATA_KEYS_FILE",
        "the JSON file of AES-256 keys that seal personal data (made by `holdfast keys add`)",
    )


def ledger_signer(settings: Settings) -> Ed25519Signer:
    """The Ed25519 key that signs ledger checkpoints."""
    if settings.ledger_signing_key_file is not None:
        return load_signer(settings.ledger_signing_key_file)
    if dev_keys_allowed(settings):
        return load_dev_signer(settings.home)
    raise MissingKey(
        "HOLDFAST_LEDGER_SIGNING_KEY_FILE",
        "the Ed25519 private key (PKCS#8 PEM) that signs ledger checkpoints",
    )


def token_verifier(settings: Settings) -> TokenVerifier:
    """Trust for bearer tokens: a JWKS URL or file, or (dev) the issuer of `holdfast token`."""
    issuer, audience = settings.jwt_issuer, settings.jwt_audience
    if settings.jwks_url:
        return TokenVerifier.from_url(settings.jwks_url, issuer=issuer, audience=audience)
    if settings.jwks_file is not None:
        return TokenVerifier.from_file(settings.jwks_file, issuer=issuer, audience=audience)
    if dev_keys_allowed(settings):
        jwks = DevIssuer(settings.home, issuer=issuer, audience=audience).jwks()
        return TokenVerifier(jwks, issuer=issuer, audience=audience)
    raise MissingKey(
        "HOLDFAST_JWKS_FILE",
        "the JSON Web Key Set of the token issuer (or HOLDFAST_JWKS_URL)",
    )


@dataclass(frozen=True)
class Keys:
    """The keys one process needs, loaded at its start (None: this process needs none)."""

    cipher: MetadataCipher | None = None
    signer: Ed25519Signer | None = None
    verifier: TokenVerifier | None = None


def keys(
    settings: Settings, *, metadata: bool = False, signing: bool = False, tokens: bool = False
) -> Keys:
    """Load the keys asked for; MissingKey names the first one not configured."""
    return Keys(
        cipher=metadata_cipher(settings) if metadata else None,
        signer=ledger_signer(settings) if signing else None,
        verifier=token_verifier(settings) if tokens else None,
    )


def database(
    settings: Settings,
    *,
    application_name: str,
    cipher: MetadataCipher | None,
    pool_size: int | None = None,
) -> Database:
    """The configured database with the retry loop (and, in tests, the fault injector).

    `cipher` is None for a process that handles no personal data (the ledger, the relay):
    any attempt to seal or open metadata there fails loudly.
    """
    if settings.database_url is None:
        raise MissingSetting("HOLDFAST_DATABASE_URL", "postgresql://... or cockroachdb://...")
    return _database(settings, settings.database_url, application_name, cipher, pool_size)


def _database(
    settings: Settings,
    url: str,
    application_name: str,
    cipher: MetadataCipher | None,
    pool_size: int | None,
) -> Database:
    engine = create_engine(
        url, pool_size=pool_size or settings.db_pool_size, application_name=application_name
    )
    rate = settings.fault_serialization_rate
    faults = FaultInjector(rate, settings.fault_seed) if rate > 0 else None
    return Database(engine, faults=faults, cipher=cipher)


@contextlib.contextmanager
def local_database(
    settings: Settings,
    *,
    application_name: str,
    cipher: MetadataCipher | None,
    migrated: bool = True,
) -> Iterator[Database]:
    """For the CLI: the configured database, or the embedded one under HOLDFAST_HOME (left
    running if `holdfast dev` already runs it, stopped after use if started here); brought to
    the newest schema unless `migrated` is False (an auditor's read-only login)."""
    embedded = None
    url = settings.database_url
    if url is None:
        already_running = (settings.home / "pgdata" / "postmaster.pid").exists()
        server = EmbeddedPostgres(settings.home)
        url = server.start()
        embedded = None if already_running else server
    db = _database(settings, url, application_name, cipher, pool_size=2)
    try:
        if migrated:
            migrate(db.engine)
        yield db
    finally:
        db.dispose()
        if embedded is not None:
            embedded.stop()
