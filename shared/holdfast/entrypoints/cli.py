"""The `holdfast` command: dev, token, migrate (and audit, once the ledger has it)."""

from __future__ import annotations

import click

from holdfast.adapters.database import EmbeddedPostgres, create_engine, migrate
from holdfast.adapters.tokens import SCOPES, DevIssuer
from holdfast.config import Settings


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
    settings = Settings.from_env()
    embedded = None
    url = settings.database_url
    if url is None:
        embedded = EmbeddedPostgres(settings.home)
        url = embedded.start()
    engine = create_engine(url, pool_size=1)
    try:
        migrate(engine)
    finally:
        engine.dispose()
        if embedded is not None:
            embedded.stop()
    click.echo("schema is up to date")


main.add_command(__import__("holdfast.entrypoints.audit", fromlist=["audit"]).audit)
