"""Shared fixtures: a real PostgreSQL (embedded, or HOLDFAST_DATABASE_URL), one fresh database
per test cloned from a migrated template, tokens from a test issuer, and the functions served
by functions-framework's own app factory."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from holdfast.adapters.database import (
    Database,
    EmbeddedPostgres,
    FaultInjector,
    create_engine,
    migrate,
    sqlalchemy_url,
    with_database,
)
from holdfast.adapters.tokens import DevIssuer, TokenVerifier
from holdfast.config import Settings
from holdfast.entrypoints import runtime as runtime_module
from holdfast.entrypoints.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = "holdfast_template"
ALL_SCOPES = "accounts:read accounts:write transfers:read transfers:write ledger:read"


def _admin(url: str) -> sa.Engine:
    return sa.create_engine(sqlalchemy_url(url), isolation_level="AUTOCOMMIT")


def state_dir(prefix: str) -> Path:
    """A directory for a server's data, outside pytest's tmp root.

    pytest resets its `pytest-of-<user>` folder to mode 0700 whenever a session (or an xdist
    worker) starts; the embedded server runs as its own system user and would lose access.
    """
    root = Path(tempfile.gettempdir()) / "holdfast-tests"
    root.mkdir(mode=0o755, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A PostgreSQL server: HOLDFAST_DATABASE_URL's, or an embedded one for this worker."""
    configured = os.environ.get("HOLDFAST_DATABASE_URL")
    if configured:
        yield configured
        return
    home = state_dir("pg-")
    embedded = EmbeddedPostgres(home)
    url = embedded.start()
    # A throwaway test server need not survive a power cut: skip the flushes (not in dev/bench).
    admin = _admin(url)
    with admin.connect() as connection:
        for setting in ("fsync = off", "synchronous_commit = off", "full_page_writes = off"):
            connection.execute(sa.text(f"ALTER SYSTEM SET {setting}"))
        connection.execute(sa.text("SELECT pg_reload_conf()"))
    admin.dispose()
    try:
        yield url
    finally:
        embedded.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def template_url(server_url: str) -> str:
    admin = _admin(server_url)
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{TEMPLATE}"'))
        connection.execute(sa.text(f'CREATE DATABASE "{TEMPLATE}"'))
    admin.dispose()
    url = with_database(server_url, TEMPLATE)
    engine = create_engine(url, pool_size=1)
    migrate(engine)
    engine.dispose()
    return url


@pytest.fixture
def database_url(server_url: str, template_url: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    with scratch_database(server_url, "t_", template=TEMPLATE) as url:
        yield url


@contextlib.contextmanager
def scratch_database(server_url: str, prefix: str, *, template: str | None) -> Iterator[str]:
    """A database made for one use and dropped after it: a copy of `template` (the migrated
    one), or empty when `template` is None."""
    name = f"{prefix}{uuid.uuid4().hex[:16]}"
    admin = _admin(server_url)
    copy = f' TEMPLATE "{template}"' if template else ""
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"{copy}'))
    try:
        yield with_database(server_url, name)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    # HOLDFAST_TEST_FAULT_RATE=0.3 runs the suite with the server failing that share of
    # commits with 40001, as CockroachDB restarts transactions (`make test-faults`).
    rate = float(os.environ.get("HOLDFAST_TEST_FAULT_RATE", "0"))
    faults = FaultInjector(rate) if rate > 0 else None
    database = Database(create_engine(database_url, pool_size=8), faults=faults)
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
def issuer(tmp_path: Path) -> DevIssuer:
    return DevIssuer(tmp_path / "home", issuer="holdfast-test", audience="holdfast")


@pytest.fixture
def runtime(db: Database, issuer: DevIssuer, tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings.from_env(
        {"HOLDFAST_HOME": str(tmp_path / "home"), "HOLDFAST_JWT_ISSUER": "holdfast-test"}
    )
    verifier = TokenVerifier(issuer.jwks(), issuer="holdfast-test", audience="holdfast")
    rt = Runtime(settings=settings, db=db, verifier=verifier)
    runtime_module.install(rt)
    try:
        yield rt
    finally:
        runtime_module.install(None)


class Api:
    """A function served by functions-framework's app, with a token of chosen scopes."""

    default_scope = ALL_SCOPES

    def __init__(self, client: Any, issuer: DevIssuer) -> None:
        self.client = client
        self.issuer = issuer

    def token(self, sub: str = "alice", scope: str | None = None) -> dict[str, str]:
        granted = self.default_scope if scope is None else scope  # "" is a token of no scope
        return {"Authorization": f"Bearer {self.issuer.issue(sub, granted)}"}

    bearer = token

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        sub: str = "alice",
        scope: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Any:
        all_headers = {**self.token(sub, scope), **(headers or {})}
        kwargs: dict[str, Any] = {"headers": all_headers}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        return self.client.open(path, method=method, **kwargs)


def function_client(name: str) -> Any:
    import functions_framework

    app = functions_framework.create_app(
        target=name, source=str(ROOT / "functions" / name / "main.py")
    )
    return app.test_client()


@pytest.fixture
def accounts_api(runtime: Runtime, issuer: DevIssuer) -> Api:
    return Api(function_client("accounts"), issuer)


@pytest.fixture
def transfers_api(runtime: Runtime, issuer: DevIssuer) -> Api:
    return Api(function_client("transfers"), issuer)


def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every Holdfast table: to show a rejected request changed nothing."""
    tables = [
        "accounts",
        "transfers",
        "account_transfers",
        "holds",
        "ledger_entries",
        "ledger_unsequenced",
        "ledger_sequence",
        "ledger_checkpoints",
        "ledger_keys",
        "outbox",
        "inbox",
    ]
    with db.engine.connect() as connection:
        return {
            name: sorted(
                (
                    tuple(str(v) for v in row)
                    for row in connection.execute(sa.text(f"SELECT * FROM {name}"))
                ),
            )
            for name in tables
        }


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Show the figures the fault suite, the fuzz runs and the drills print (lines starting
    with `[figures]`), even from passing tests on xdist workers, in the closing summary."""
    lines = [
        line
        for report in terminalreporter.stats.get("passed", [])
        for _, text in getattr(report, "sections", [])
        for line in text.splitlines()
        if line.startswith("[figures] ")
    ]
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.write_line(line)
