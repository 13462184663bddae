"""`holdfast audit`: the auditor's tools.

    holdfast audit verify FILE --public-key KEY   check an export offline (no database)
    holdfast audit check                          recompute the checkpoints from the database

Both exit 0 with a summary line when everything holds, 1 naming the first thing that does not.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from sqlalchemy.exc import ProgrammingError

from holdfast.adapters.database import Database, EmbeddedPostgres, create_engine
from holdfast.adapters.signing import DEV_KEY, Ed25519Keyring, load_public_key, load_signer
from holdfast.config import Settings
from holdfast.domain.ledger import TamperDetected, Verifier
from holdfast.services import ledger as service

PROGRESS_INTERVAL_S = 1.0
KeyFiles = tuple[Path, ...]


@click.group()
def audit() -> None:
    """The auditor's tools: verify an export offline, check the database."""


def _keyring(paths: KeyFiles) -> Ed25519Keyring:
    keys = []
    for path in paths:
        try:
            keys.append(load_public_key(path))
        except (ValueError, TypeError) as error:
            raise click.BadParameter(f"{path}: {error}", param_hint="--public-key") from error
    return Ed25519Keyring(keys)


@audit.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A trusted Ed25519 public key (PEM); repeat for keys rotated out.",
)
def verify(file: Path, public_keys: KeyFiles) -> None:
    """Check an export (GET /v1/ledger/export) offline: every entry against its checkpoint,
    every signature and chain link, and the double entry of every transfer."""
    verifier = Verifier(_keyring(public_keys))
    started = last_report = time.monotonic()
    number = 0
    try:
        with file.open("rb") as handle:
            for number, raw in enumerate(handle, 1):
                verifier.feed_line(f"line {number}", raw)
                if time.monotonic() - last_report >= PROGRESS_INTERVAL_S:
                    last_report = time.monotonic()
                    rate = verifier.entries / (last_report - started)
                    click.echo(
                        f"verified {number} lines, {verifier.entries} entries "
                        f"({rate:,.0f} entries/s)",
                        err=True,
                    )
        summary = verifier.finish(f"line {number + 1} (end of file)")
    except TamperDetected as error:
        click.echo(f"FAILED {error}")
        sys.exit(1)
    click.echo(summary.line())


@contextmanager
def _database(settings: Settings) -> Iterator[Database]:
    """The configured database, or the embedded one (left running if it already was)."""
    embedded = None
    url = settings.database_url
    if url is None:
        already_running = (settings.home / "pgdata" / "postmaster.pid").exists()
        server = EmbeddedPostgres(settings.home)
        url = server.start()
        embedded = None if already_running else server
    db = Database(create_engine(url, pool_size=2, application_name="holdfast-audit"))
    try:
        yield db
    finally:
        db.dispose()
        if embedded is not None:
            embedded.stop()


@audit.command()
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="More trusted public keys (the configured signing key is always trusted).",
)
@click.option("--last", type=click.IntRange(min=1), help="Recompute only the latest N checkpoints.")
def check(public_keys: KeyFiles, last: int | None) -> None:
    """Recompute the checkpoints from the database and report every difference."""
    settings = Settings.from_env()
    keyring = _keyring(public_keys)
    configured = settings.ledger_signing_key_file
    if configured is not None or (settings.home / DEV_KEY).exists():
        own = load_signer(configured, settings.home)
        keyring.keys[own.key_id] = own.public_key
    with _database(settings) as db:
        try:
            first = None
            if last is not None:
                latest = service.export_range(db, None, None).last
                first = max(1, latest - last + 1)
            report = service.check(db, keyring, first)
        except ProgrammingError as error:
            click.echo(f"FAILED the database has no ledger tables (holdfast migrate): {error}")
            sys.exit(1)
    for finding in report.findings:
        click.echo(f"DIFFERENCE {finding}")
    if not report.ok:
        click.echo(
            f"FAILED {len(report.findings)} difference(s) between the database and its proof"
        )
        sys.exit(1)
    if report.summary is not None:
        click.echo(report.summary.line().replace("OK:", "OK (database):", 1))
