"""Shared fixtures: a real PostgreSQL (embedded, or HOLDFAST_DATABASE_URL), one fresh database
per test cloned from a migrated template, tokens from a test issuer, and the functions served
by functions-framework's own app factory."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from holdfast import bootstrap
from holdfast.adapters.crypto import write_key_file
from holdfast.adapters.database import (
    Database,
    EmbeddedPostgres,
    create_engine,
    migrate,
    sqlalchemy_url,
    with_database,
)
from holdfast.adapters.signing import private_pem
from holdfast.adapters.tokens import DevIssuer
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


@dataclass(frozen=True)
class KeyFiles:
    """A test's key files, as a deployment mounts its secrets."""

    metadata: Path
    signing: Path
    jwks: Path


@pytest.fixture
def issuer(tmp_path: Path) -> DevIssuer:
    return DevIssuer(tmp_path / "issuer", issuer="holdfast-test", audience="holdfast")


@pytest.fixture
def key_files(tmp_path: Path, issuer: DevIssuer) -> KeyFiles:
    secrets = tmp_path / "secrets"
    metadata = secrets / "metadata-keys.json"
    write_key_file(metadata, {"test-1": os.urandom(32)}, "test-1")
    signing = secrets / "ledger-signing-key.pem"
    signing.write_bytes(private_pem())
    jwks = secrets / "jwks.json"
    jwks.write_text(json.dumps(issuer.jwks()))
    return KeyFiles(metadata, signing, jwks)


def fault_environment(request: pytest.FixtureRequest) -> dict[str, str]:
    """HOLDFAST_TEST_FAULT_RATE=0.3 runs the suite with the server failing that share of
    commits with 40001, as CockroachDB restarts transactions (`make test-faults`). The seed
    is per test (HOLDFAST_TEST_FAULT_SEED replays one) and printed: pytest shows it with a
    failing test's output."""
    rate = os.environ.get("HOLDFAST_TEST_FAULT_RATE", "0")
    if float(rate) <= 0:
        return {}
    seed = os.environ.get("HOLDFAST_TEST_FAULT_SEED") or str(random.SystemRandom().getrandbits(32))
    print(
        f"[faults] {rate} of commits fail with 40001, seed {seed}; replay with "
        f"HOLDFAST_TEST_FAULT_RATE={rate} HOLDFAST_TEST_FAULT_SEED={seed} "
        f"pytest '{request.node.nodeid}'"
    )
    return {"HOLDFAST_FAULT_SERIALIZATION_RATE": rate, "HOLDFAST_FAULT_SEED": seed}


@pytest.fixture
def settings(
    database_url: str, key_files: KeyFiles, tmp_path: Path, request: pytest.FixtureRequest
) -> Settings:
    """What a deployed function reads from its environment: the database, the three key
    files and the token issuer. Everything the tests build goes through holdfast.bootstrap
    with these, as every process does with its own."""
    return Settings.from_env(
        {
            "HOLDFAST_HOME": str(tmp_path / "home"),
            "HOLDFAST_DATABASE_URL": database_url,
            "HOLDFAST_METADATA_KEYS_FILE": str(key_files.metadata),
            "HOLDFAST_LEDGER_SIGNING_KEY_FILE": str(key_files.signing),
            "HOLDFAST_JWKS_FILE": str(key_files.jwks),
            "HOLDFAST_JWT_ISSUER": "holdfast-test",
            **fault_environment(request),
        }
    )


@pytest.fixture
def make_db(settings: Settings) -> Iterator[Callable[..., Database]]:
    """More instances of the database, as other processes would build them: `make_db(
    pool_size=4)`; `cipher=False` for one that holds no metadata key (the ledger, the relay)."""
    made: list[Database] = []

    def make(*, pool_size: int = 8, cipher: bool = True, faults: bool = True) -> Database:
        configured = settings if faults else replace(settings, fault_serialization_rate=0.0)
        database = bootstrap.database(
            configured,
            application_name="holdfast-test",
            cipher=bootstrap.metadata_cipher(settings) if cipher else None,
            pool_size=pool_size,
        )
        made.append(database)
        return database

    yield make
    for database in made:
        database.dispose()


@pytest.fixture
def db(make_db: Callable[..., Database]) -> Database:
    return make_db()


@pytest.fixture
def runtime(db: Database, settings: Settings) -> Iterator[Runtime]:
    """The process-wide runtime of a function, built by the same root as in a deployment:
    it holds every key a function may need (accounts, transfers and ledger share it)."""
    keys = bootstrap.keys(settings, metadata=True, signing=True, tokens=True)
    rt = Runtime.from_settings(settings, "transfers", keys=keys, db=db)
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
