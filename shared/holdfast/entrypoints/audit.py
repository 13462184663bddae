"""`holdfast audit`: the auditor's tools.

    holdfast audit verify FILE --public-key KEY   check an export offline (no database)
    holdfast audit prove FILE --public-key KEY    check one entry's inclusion proof offline
    holdfast audit extends FILE --held-digest D --public-key KEY
                                                  check that checkpoint records extend one held
    holdfast audit check                          recompute the checkpoints from the database

Each exits 0 with a summary line when everything holds, 1 naming the first thing that does not.
Files are read as I-JSON (RFC 7493, `domain.ijson`): a duplicate member name is refused.
`--public-key` takes a PEM file or the JSON answer of GET /v1/ledger/public-key.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from pathlib import Path
from typing import Any

import click
from cryptography.exceptions import UnsupportedAlgorithm
from sqlalchemy.exc import ProgrammingError

from holdfast import bootstrap, limits
from holdfast.adapters.signing import DEV_KEY, Ed25519Keyring, load_public_keys
from holdfast.config import MissingKey, Settings
from holdfast.domain import ijson, proofs
from holdfast.domain.ledger import TamperDetected, Verifier
from holdfast.services import ledger as service

PROGRESS_INTERVAL_S = 1.0
DIGEST = re.compile(r"^[0-9a-f]{64}\Z")
KeyFiles = tuple[Path, ...]


@click.group()
def audit() -> None:
    """The auditor's tools: verify an export, a proof or a chain offline; check the database."""


def _keyring(paths: KeyFiles) -> Ed25519Keyring:
    keys = []
    for path in paths:
        try:
            keys.extend(load_public_keys(path))
        except (ValueError, TypeError, UnsupportedAlgorithm) as error:
            raise click.BadParameter(f"{path}: {error}", param_hint="--public-key") from error
    return Ed25519Keyring(keys)


def _digest(context: click.Context, parameter: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    if not DIGEST.match(value.lower()):
        raise click.BadParameter("a checkpoint digest is 64 hex digits")
    return value.lower()


PUBLIC_KEYS = click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A trusted Ed25519 public key: a PEM file, or the JSON answer of "
    "GET /v1/ledger/public-key. Repeat for keys rotated out.",
)
EXPECT_DIGEST = click.option(
    "--expect-digest",
    callback=_digest,
    help="The digest the last checkpoint must have (from GET /v1/ledger/checkpoints/latest or "
    "a checkpoint event, obtained independently): a shortened export fails.",
)


@audit.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@PUBLIC_KEYS
@EXPECT_DIGEST
@click.option(
    "--extends",
    callback=_digest,
    help="The digest of a checkpoint you already hold: the export must contain it, or start "
    "right after it (export from=N+1 to check only what is new since checkpoint N).",
)
def verify(
    file: Path, public_keys: KeyFiles, expect_digest: str | None, extends: str | None
) -> None:
    """Check an export (GET /v1/ledger/export) offline: every entry against its checkpoint,
    every signature and chain link, and the double entry of every transfer."""
    verifier = Verifier(_keyring(public_keys), extends=extends, expect_digest=expect_digest)
    started = last_report = time.monotonic()
    number = 0
    try:
        with file.open("rb") as handle:
            for number, raw in enumerate(handle, 1):
                verifier.feed_line(f"line {number}", raw)  # strict I-JSON, fast for entries
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


def _read_json(file: Path, what: str) -> Any:
    with file.open("rb") as handle:
        raw = handle.read(limits.audit_json_file_bytes_max + 1)
    if len(raw) > limits.audit_json_file_bytes_max:
        raise TamperDetected(what, f"the file is over {limits.audit_json_file_bytes_max} bytes")
    try:
        return ijson.loads(raw)
    except ijson.NotIJson as error:
        raise TamperDetected(what, f"not I-JSON: {error}") from error


@audit.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@PUBLIC_KEYS
def prove(file: Path, public_keys: KeyFiles) -> None:
    """Check an inclusion proof (GET /v1/ledger/entries/{seq}/proof) offline: the entry is
    leaf `leaf_index` of the checkpoint, whose signature a trusted key made."""
    keyring = _keyring(public_keys)
    try:
        proven = proofs.check_inclusion(_read_json(file, "the proof"), keyring)
    except TamperDetected as error:
        click.echo(f"FAILED {error}")
        sys.exit(1)
    click.echo(proven.line())


@audit.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--held-digest",
    required=True,
    callback=_digest,
    help="The digest of checkpoint N, which you hold from an earlier audit.",
)
@PUBLIC_KEYS
@EXPECT_DIGEST
def extends(file: Path, held_digest: str, public_keys: KeyFiles, expect_digest: str | None) -> None:
    """Check that later checkpoints extend one you hold: FILE is the answer of
    GET /v1/ledger/checkpoints?after=N (or after=N-1), or such pages one per line."""
    keyring = _keyring(public_keys)
    try:
        records = _checkpoint_records(file)
        last = proofs.check_extension(held_digest, records, keyring)
        if expect_digest is not None and last["digest"] != expect_digest:
            raise TamperDetected(
                f"checkpoint record {len(records)}",
                f"the records end on checkpoint {last['number']} with digest {last['digest']},"
                f" not on the expected digest {expect_digest}",
            )
    except TamperDetected as error:
        click.echo(f"FAILED {error}")
        sys.exit(1)
    click.echo(
        f"OK: checkpoint {last['number']} (digest {last['digest']}) extends the held "
        f"checkpoint through {len(records)} signed, chained checkpoint records"
    )


def _checkpoint_records(file: Path) -> list[Any]:
    """The `checkpoints` of one page, or of pages one per line (JSON Lines)."""
    try:
        pages = [_read_json(file, "the file")]
    except TamperDetected as error:
        if "Extra data" not in error.message:  # not JSON Lines either: say what is wrong
            raise
        lines = file.read_bytes().splitlines()[: limits.audit_json_file_lines_max]
        pages = []
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    pages.append(ijson.loads(line))
                except ijson.NotIJson as error:
                    raise TamperDetected(f"line {number}", f"not I-JSON: {error}") from error
    records: list[Any] = []
    for page in pages:
        if not isinstance(page, dict) or not isinstance(page.get("checkpoints"), list):
            raise TamperDetected("the file", "not an answer of GET /v1/ledger/checkpoints")
        records.extend(page["checkpoints"])
    return records


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
    if settings.ledger_signing_key_file is not None or (settings.home / DEV_KEY).exists():
        with contextlib.suppress(MissingKey):  # a dev key, but not on the dev database
            own = bootstrap.ledger_signer(settings)
            keyring.keys[own.key_id] = own.public_key
    with bootstrap.local_database(
        settings, application_name="holdfast-audit", cipher=None, migrated=False
    ) as db:
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
