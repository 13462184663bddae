"""The `holdfast` command: dev, token, migrate, audit, keys."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import click

from holdfast import bootstrap
from holdfast.adapters.crypto import MetadataCipher, write_key_file
from holdfast.adapters.tokens import SCOPES, DevIssuer
from holdfast.config import MissingSetting, Settings
from holdfast.entrypoints.audit import audit
from holdfast.services.keys import rotate_metadata_keys


@click.group()
def main() -> None:
    """Holdfast: accounts, TCC transfers and a signed double-entry ledger."""


@main.command()
@click.option("--port", default=8080, show_default=True, help="Gateway port on 127.0.0.1.")
def dev(port: int) -> None:
    """Run everything locally in the foreground (Ctrl-C stops it all)."""
    from holdfast.entrypoints import dev as dev_module

    dev_module.run(port, Settings.from_env())


@main.command()
@click.option("--sub", required=True, help="Subject: the owner name the token acts as.")
@click.option("--scope", "scope", required=True, help='Space-separated, e.g. "accounts:read".')
@click.option("--ttl", default=3600, show_default=True, help="Lifetime in seconds.")
def token(sub: str, scope: str, ttl: int) -> None:
    """Print a bearer token signed by the local dev issuer key."""
    unknown = set(scope.split()) - SCOPES
    if unknown:
        raise click.BadParameter(
            f"unknown scopes: {' '.join(sorted(unknown))}", param_hint="--scope"
        )
    settings = Settings.from_env()
    issuer = DevIssuer(settings.home, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    click.echo(issuer.issue(sub, scope, ttl))


@main.command("migrate")
def migrate_command() -> None:
    """Bring the database schema to the newest version."""
    with bootstrap.local_database(
        Settings.from_env(), application_name="holdfast-migrate", cipher=None
    ):
        click.echo("schema is up to date")


@main.command()
@click.option("--sink", envvar="K_SINK", required=True, help="Where events go (K_SINK).")
def relay(sink: str) -> None:
    """Relay the outbox to K_SINK until SIGTERM (any number may run at once: leases)."""
    import asyncio
    import signal

    import prometheus_client

    from holdfast import telemetry
    from holdfast.adapters.relay import HttpPublisher
    from holdfast.services.relay import Relay, relay_name

    settings = Settings.from_env()
    try:  # the relay moves events, which carry no personal data: it needs no key
        db = bootstrap.database(
            settings, application_name="holdfast-relay", cipher=None, pool_size=2
        )
    except MissingSetting as error:
        raise click.UsageError(str(error)) from error
    telemetry.configure("relay")
    # The relay serves no API: its gauges (outbox backlog and age) are scraped here.
    prometheus_client.start_http_server(settings.metrics_port)

    async def serve() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        publisher = HttpPublisher(sink)
        try:
            await Relay(db, publisher, name=relay_name()).run(stop)
        finally:
            await publisher.aclose()

    try:
        asyncio.run(serve())
    finally:
        db.dispose()


@main.group()
def keys() -> None:
    """Keys for personal data at rest (HOLDFAST_METADATA_KEYS_FILE)."""


@keys.command("add")
@click.option(
    "--file",
    "path",
    type=click.Path(path_type=Path),
    help="The JSON key file [default: HOLDFAST_METADATA_KEYS_FILE, else the dev key file].",
)
@click.option("--id", "key_id", required=True, help="The new key's id, e.g. 2026-11.")
def keys_add(path: Path | None, key_id: str) -> None:
    """Add a new random AES-256 key to the file and make it the active one."""
    if path is None:
        path = bootstrap.metadata_keys_file(Settings.from_env())
    existing = MetadataCipher.from_file(path) if path.exists() else None
    raw = json.loads(path.read_text())["keys"] if existing else {}
    if key_id in raw:
        raise click.BadParameter(f"{key_id} is already in {path}", param_hint="--id")
    keys_now = {k: base64.b64decode(v) for k, v in raw.items()}
    keys_now[key_id] = os.urandom(32)
    write_key_file(path, keys_now, key_id)
    click.echo(
        f"{key_id} is now the active key in {path}; roll out, then run `holdfast keys rotate`"
    )


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-seal every account's and transfer's metadata with the active key."""
    settings = Settings.from_env()
    cipher = bootstrap.metadata_cipher(settings)
    with bootstrap.local_database(settings, application_name="holdfast-keys", cipher=cipher) as db:
        counts = rotate_metadata_keys(db)
    summary = ", ".join(f"{n} {table}" for table, n in counts.items())
    click.echo(f"re-sealed with key {db.cipher.active}: {summary}")


main.add_command(audit)
