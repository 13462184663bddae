"""The migration Job's second step (infra/terraform/modules/app/grant_app_user.py), run for
real against the embedded PostgreSQL: the functions get a login of their own that holds only
the `holdfast_functions` role, so the ledger's history is append-only for them."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import ProgrammingError

from holdfast.adapters.database import sqlalchemy_url
from tests.deploy.manifests import ROOT

SCRIPT = ROOT / "infra" / "terraform" / "modules" / "app" / "grant_app_user.py"


def with_login(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def run_grant(owner_url: str, functions_url: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "HOLDFAST_MIGRATION_DATABASE_URL": owner_url,
        "HOLDFAST_DATABASE_URL": functions_url,
    }
    return subprocess.run(  # the Job's own command, with our interpreter
        [sys.executable, str(SCRIPT)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def functions_url(database_url: str) -> str:
    user = f"holdfast_app_{uuid.uuid4().hex[:8]}"
    done = run_grant(database_url, with_login(database_url, user, "A" * 24))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{user} logs in with the holdfast_functions role only\n"
    return with_login(database_url, user, "A" * 24)


def test_the_functions_login_reads_and_writes_business_tables(functions_url: str) -> None:
    engine = sa.create_engine(sqlalchemy_url(functions_url))
    try:
        with engine.begin() as connection:
            assert connection.execute(sa.text("SELECT count(*) FROM accounts")).scalar() == 0
            connection.execute(sa.text("DELETE FROM outbox WHERE false"))
            assert connection.execute(sa.text("SELECT current_user")).scalar() != "postgres"
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entries SET amount = amount",
        "DELETE FROM ledger_entries",
        "UPDATE ledger_checkpoints SET number = number",
        "DROP TABLE accounts",
    ],
)
def test_the_functions_login_cannot_rewrite_history(functions_url: str, statement: str) -> None:
    engine = sa.create_engine(sqlalchemy_url(functions_url))
    try:
        with (
            pytest.raises(ProgrammingError, match=r"permission denied|must be owner"),
            engine.begin() as connection,
        ):
            connection.execute(sa.text(statement))
    finally:
        engine.dispose()


def test_running_it_again_only_rotates_the_password(database_url: str, functions_url: str) -> None:
    user = urlsplit(functions_url).username
    assert user is not None
    done = run_grant(database_url, with_login(database_url, user, "B" * 24))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("user", "password", "message"),
    [
        ("postgres", "A" * 24, "must not log in as the schema's owner"),
        ("holdfast_app", "short", "16-128 letters and digits"),
        ("holdfast_app", "A" * 20 + "';--", "16-128 letters and digits"),
        ('app"; DROP', "A" * 24, "lowercase SQL identifier"),
    ],
)
def test_unsafe_or_privileged_logins_are_refused(
    database_url: str, user: str, password: str, message: str
) -> None:
    done = run_grant(database_url, with_login(database_url, user, password))
    assert done.returncode != 0
    assert message in done.stderr
