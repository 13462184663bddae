"""Least privilege per function, for real on the embedded PostgreSQL.

The migration Job's second step (infra/terraform/modules/app/grant_app_user.py) gives each
function a login of its own holding only its role from migration 0005. Connected as each
login: every use case of that function works (the real services, not hand-written SQL), and
statements outside its part of the schema fail with "permission denied". No login may
rewrite the ledger's history.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import ProgrammingError

from holdfast.adapters.database import Database, create_engine, sqlalchemy_url
from holdfast.adapters.relay import Claimed
from holdfast.adapters.signing import load_dev_signer
from holdfast.domain.accounts import NormalBalance, OpenAccount
from holdfast.domain.actors import SYSTEM
from holdfast.domain.transfers import CancelCommand, ConfirmCommand, Leg, ReserveCommand
from holdfast.services import accounts, events, ledger, transfers
from holdfast.services.relay import Policy, Relay
from tests.deploy.manifests import ROOT

SCRIPT = ROOT / "infra" / "terraform" / "modules" / "app" / "grant_app_user.py"
FUNCTIONS = ("accounts", "transfers", "ledger", "relay")
PASSWORD = "A" * 24
DENIED = r"permission denied|must be owner"
HISTORY = (
    "ledger_entries",
    "ledger_sequence",
    "ledger_checkpoints",
    "ledger_keys",
    "ledger_seal_points",
    "ledger_account_totals",
    "ledger_currency_totals",
)

# What each role may do, written out independently of the migration (S I U D).
MATRIX: dict[str, dict[str, str]] = {
    "holdfast_accounts": {
        "accounts": "SIU",
        "holds": "S",
        "outbox": "I",
        "inbox": "SI",
    },
    "holdfast_transfers": {
        "accounts": "SU",
        "transfers": "SIU",
        "account_transfers": "SI",
        "holds": "SID",
        "ledger_entries": "I",
        "ledger_unsequenced": "I",
        "outbox": "I",
        "inbox": "SI",
    },
    "holdfast_ledger": {
        "accounts": "S",
        "ledger_entries": "S",
        "ledger_unsequenced": "SD",
        "ledger_sequence": "SI",
        "ledger_checkpoints": "SI",
        "ledger_keys": "SI",
        "ledger_seal_points": "SI",
        "ledger_account_totals": "SI",
        "ledger_currency_totals": "SI",
        "outbox": "I",
    },
    "holdfast_relay": {"outbox": "SUD"},
}
LETTERS = {"SELECT": "S", "INSERT": "I", "UPDATE": "U", "DELETE": "D"}


def with_login(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def run_grant(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # the Job's own command, with our interpreter
        [sys.executable, str(SCRIPT)],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("HOLDFAST_")},
            **environment,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def load_script() -> Any:
    spec = importlib.util.spec_from_file_location("grant_app_user", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GRANT = load_script()


def job_environment(owner_url: str, users: dict[str, str]) -> dict[str, str]:
    environment = {"HOLDFAST_MIGRATION_DATABASE_URL": owner_url}
    for name, user in users.items():
        key = "HOLDFAST_DATABASE_URL" if name == "legacy" else f"HOLDFAST_DATABASE_URL_{name}"
        environment[key.upper()] = with_login(owner_url, user, PASSWORD)
    return environment


def new_users() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return {name: f"hf_{name}_{suffix}" for name in (*FUNCTIONS, "legacy")}


@pytest.fixture
def logins(database_url: str) -> dict[str, str]:
    """name -> URL of the login the Job's script made for it (the four functions and the
    legacy shared one); in process, as the Job's command is tested on its own below."""
    environment = job_environment(database_url, new_users())
    GRANT.grant(database_url, GRANT.logins_from(environment))
    return {
        name: environment[f"HOLDFAST_DATABASE_URL_{name}".upper()]
        if name != "legacy"
        else environment["HOLDFAST_DATABASE_URL"]
        for name in (*FUNCTIONS, "legacy")
    }


@pytest.fixture
def as_login(logins: dict[str, str], db: Database) -> Iterator[Any]:
    opened: list[Database] = []

    def connect(name: str) -> Database:
        database = Database(create_engine(logins[name], pool_size=2), cipher=db.cipher)
        opened.append(database)
        return database

    yield connect
    for database in opened:
        database.dispose()


# --- the catalog says exactly the matrix ------------------------------------------------


def test_the_roles_hold_exactly_the_matrix(db: Database) -> None:
    with db.engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT grantee, table_name, privilege_type FROM information_schema"
                ".role_table_grants WHERE grantee IN :roles AND table_schema = 'public'"
            ).bindparams(sa.bindparam("roles", expanding=True)),
            {"roles": list(MATRIX)},
        ).all()
    found: dict[str, dict[str, set[str]]] = {}
    for grantee, table, privilege in rows:
        found.setdefault(grantee, {}).setdefault(table, set()).add(LETTERS.get(privilege, "?"))
    assert found == {
        role: {t: set(p) for t, p in tables.items()} for role, tables in MATRIX.items()
    }


def test_every_table_was_decided_for_every_role(db: Database) -> None:
    """A new table must be granted (or deliberately not) to each role: list it in MATRIX."""
    with db.engine.connect() as connection:
        tables = set(
            connection.execute(
                sa.text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND table_name <> 'alembic_version'"
                )
            ).scalars()
        )
    decided = {table for grants in MATRIX.values() for table in grants}
    assert decided == tables


def test_nobody_may_rewrite_history() -> None:
    for role, grants in MATRIX.items():
        for table in HISTORY:
            assert not set(grants.get(table, "")) & {"U", "D"}, (role, table)


# --- forbidden statements fail --------------------------------------------------------------

FORBIDDEN: dict[str, list[str]] = {
    "accounts": [
        "SELECT count(*) FROM transfers",
        "SELECT count(*) FROM ledger_entries",
        "DELETE FROM accounts",
        "UPDATE holds SET amount = amount",
        "UPDATE outbox SET attempts = 0",
    ],
    "transfers": [
        "SELECT count(*) FROM ledger_entries",
        "INSERT INTO ledger_checkpoints (number) VALUES (1)",
        "DELETE FROM accounts",
        "DELETE FROM transfers",
        "DELETE FROM outbox",
        "SELECT count(*) FROM outbox",
    ],
    "ledger": [
        "INSERT INTO ledger_entries (id) VALUES (gen_random_uuid())",
        "UPDATE accounts SET status = status",
        "SELECT count(*) FROM transfers",
        "SELECT count(*) FROM holds",
        "SELECT count(*) FROM outbox",
        "DROP TABLE ledger_keys",
    ],
    "relay": [
        "SELECT count(*) FROM accounts",
        "SELECT count(*) FROM ledger_entries",
        "INSERT INTO outbox (id) VALUES (gen_random_uuid())",
        "SELECT count(*) FROM inbox",
    ],
}
# No login at all may change the ledger's history.
REWRITES = [
    *(
        f"UPDATE {table} SET {column} = {column}"
        for table, column in (
            ("ledger_entries", "amount"),
            ("ledger_sequence", "seq"),
            ("ledger_checkpoints", "number"),
            ("ledger_keys", "key_id"),
        )
    ),
    *(f"DELETE FROM {table}" for table in HISTORY),
    *(f"TRUNCATE {table}" for table in HISTORY),
]


def refusals(url: str, statements: list[str]) -> dict[str, str]:
    """Each statement in a transaction of its own: statement -> how it failed ("" if it ran)."""
    engine = sa.create_engine(sqlalchemy_url(url))
    outcome: dict[str, str] = {}
    try:
        for statement in statements:
            try:
                with engine.begin() as connection:
                    connection.execute(sa.text(statement))
                outcome[statement] = ""
            except ProgrammingError as error:
                outcome[statement] = str(error.orig).splitlines()[0]
    finally:
        engine.dispose()
    return outcome


@pytest.mark.parametrize("name", [*FUNCTIONS, "legacy"])
def test_forbidden_statements_are_refused(logins: dict[str, str], name: str) -> None:
    outcome = refusals(logins[name], [*FORBIDDEN.get(name, []), *REWRITES])
    allowed = {s: why for s, why in outcome.items() if not re.search(DENIED, why)}
    assert allowed == {}


def test_the_refusal_check_sees_an_allowed_statement(logins: dict[str, str]) -> None:
    """The check above can fail: a statement the role may run comes back as allowed."""
    outcome = refusals(logins["relay"], ["SELECT count(*) FROM outbox", *REWRITES[:1]])
    assert outcome["SELECT count(*) FROM outbox"] == ""
    assert re.search(DENIED, outcome[REWRITES[0]])


# --- every use case works as its own function's login -------------------------------------


def open_pair(db: Database) -> tuple[uuid.UUID, uuid.UUID]:
    """An unlimited funding account and a customer account, opened as the schema's owner."""
    ids = (uuid.uuid4(), uuid.uuid4())
    for account_id, limit in zip(ids, (None, 0), strict=True):
        command = OpenAccount(account_id, "EUR", "bank", NormalBalance.CREDIT, limit, {})
        accounts.open_account(db, command, SYSTEM)
    return ids


def reserve(
    debit: uuid.UUID, credit: uuid.UUID, *, immediate: bool, amount: int = 500
) -> ReserveCommand:
    transfer_id = uuid.uuid4()
    return ReserveCommand(
        id=transfer_id,
        currency="EUR",
        legs=(Leg(debit, credit, amount),),
        timeout_s=300,
        immediate=immediate,
        metadata={"note": "x"},
        request={"id": str(transfer_id)},
    )


def test_the_accounts_login_serves_every_accounts_use_case(as_login: Any) -> None:
    db = as_login("accounts")
    account_id = uuid.uuid4()
    command = OpenAccount(account_id, "EUR", "alice", NormalBalance.CREDIT, 0, {"name": "A"})
    assert accounts.open_account(db, command, SYSTEM).account.id == account_id
    assert accounts.open_account(db, command, SYSTEM).account.id == account_id  # replay
    assert accounts.get_account(db, account_id, SYSTEM).metadata == {"name": "A"}
    assert accounts.change_status(db, account_id, "freeze", SYSTEM).status == "frozen"
    inbound = events.Inbound("/bank", str(uuid.uuid4()), "dev.holdfast.account.open.v1", "x")
    assert events.deliver(db, inbound, lambda connection: None).duplicate is False
    assert events.deliver(db, inbound, lambda connection: None).duplicate is True


def test_the_transfers_login_serves_every_transfers_use_case(db: Database, as_login: Any) -> None:
    funding, customer = open_pair(db)
    fn = as_login("transfers")

    def run(*commands: Any) -> list[transfers.Outcome]:
        outcomes = transfers.execute(fn, [transfers.Operation(c, SYSTEM) for c in commands])
        assert [o.error for o in outcomes] == [None] * len(commands)
        return outcomes

    run(reserve(funding, customer, immediate=True, amount=2000))  # posts entries
    held, dropped, lapsed = (reserve(customer, funding, immediate=False) for _ in range(3))
    run(held, dropped, lapsed)
    run(ConfirmCommand(held.id), CancelCommand(dropped.id), CancelCommand(uuid.uuid4()))
    with db.engine.begin() as connection:  # let the third hold lapse (as the owner)
        past = datetime.now(UTC) - timedelta(minutes=1)
        for table in ("transfers", "holds"):
            column = "id" if table == "transfers" else "transfer_id"
            connection.execute(
                sa.text(f"UPDATE {table} SET expires_at = :past WHERE {column} = :id"),
                {"past": past, "id": lapsed.id},
            )
    assert transfers.measure_lapsed(fn) == 1
    assert transfers.sweep_expired(fn) == 1
    transfer, _ = transfers.get_transfer(fn, held.id, SYSTEM)
    assert transfer.state == "confirmed"
    page, _ = transfers.list_transfers(
        fn, SYSTEM, account_id=customer, state=None, after=None, limit=10
    )
    assert len(page) == 4
    inbound = events.Inbound("/bank", str(uuid.uuid4()), "dev.holdfast.transfer.cancel.v1", "x")
    assert events.deliver(fn, inbound, lambda connection: None).duplicate is False


def test_the_ledger_login_seals_and_serves_the_auditor(
    db: Database, as_login: Any, tmp_path: Path
) -> None:
    funding, customer = open_pair(db)
    operations = [transfers.Operation(reserve(funding, customer, immediate=True), SYSTEM)]
    transfers.execute(db, operations)
    fn = as_login("ledger")
    signer = load_dev_signer(tmp_path)
    sealed = ledger.seal_pending(fn, signer)
    assert [c.number for c in sealed] == [1]
    assert len(ledger.list_entries(fn, account_id=None, transfer_id=None, after=0, limit=10)) == 2
    assert ledger.balance(fn, customer, None).posted == 500
    assert ledger.trial_balance(fn, None)[1] == {"EUR": {"debit": 500, "credit": 500}}
    assert [c.number for c in ledger.list_checkpoints(fn, after=0, limit=10)] == [1]
    span = ledger.export_range(fn, None, None)
    assert [r["type"] for r in ledger.export_records(fn, span)].count("entry") == 2
    assert ledger.known_keys(fn)[0][0] == signer.key_id


class Sink:
    """A sink that takes every event."""

    def __init__(self) -> None:
        self.sent: list[Claimed] = []

    async def publish(self, row: Claimed, timeout_s: float) -> None:
        self.sent.append(row)


def test_the_relay_login_publishes_measures_and_prunes(db: Database, as_login: Any) -> None:
    open_pair(db)  # two account.opened events in the outbox
    relay = Relay(as_login("relay"), Sink(), Policy(retention_s=0.0))
    assert relay.measure()[0] == 2
    step = asyncio.run(relay.step())
    assert len(step.published) == 2
    assert relay.measure() == (0, 0.0)
    assert relay.prune() == 2


# --- the Job itself ------------------------------------------------------------------------


def test_the_job_command_grants_each_login_its_role_and_rotates_passwords(
    database_url: str,
) -> None:
    users = new_users()
    done = run_grant(job_environment(database_url, users))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        *(f"{users[f]} logs in with the holdfast_{f} role only" for f in FUNCTIONS),
        f"{users['legacy']} logs in with the holdfast_functions role only",
    ]
    environment = job_environment(database_url, users)
    environment = {k: v.replace(PASSWORD, "B" * 24) for k, v in environment.items()}
    done = run_grant(environment)
    assert done.returncode == 0, done.stderr
    engine = sa.create_engine(sqlalchemy_url(environment["HOLDFAST_DATABASE_URL_RELAY"]))
    try:
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT count(*) FROM outbox")).scalar() == 0
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"relay": "postgres"}, "must not log in as the schema's owner"),
        ({"relay": "holdfast_relay"}, "is a role, not a login"),
        ({"ledger": "hf_shared", "relay": "hf_shared"}, "must not share the login hf_shared"),
        ({"accounts": 'app"; DROP'}, "lowercase SQL identifier"),
    ],
)
def test_unsafe_or_shared_logins_are_refused(
    database_url: str, change: dict[str, str], message: str
) -> None:
    users = {name: f"hf_{name}_x" for name in FUNCTIONS} | change
    done = run_grant(job_environment(database_url, users))
    assert done.returncode != 0
    assert message in done.stderr


@pytest.mark.parametrize("password", ["short", "A" * 20 + "';--"])
def test_unsafe_passwords_are_refused(database_url: str, password: str) -> None:
    environment = job_environment(database_url, {name: f"hf_{name}_y" for name in FUNCTIONS})
    environment["HOLDFAST_DATABASE_URL_LEDGER"] = with_login(database_url, "hf_l", password)
    done = run_grant(environment)
    assert done.returncode != 0
    assert "16-128 letters and digits" in done.stderr


def test_a_missing_function_url_is_refused(database_url: str) -> None:
    environment = job_environment(database_url, {"accounts": "hf_a", "transfers": "hf_t"})
    done = run_grant(environment)
    assert done.returncode != 0
    assert "HOLDFAST_DATABASE_URL_LEDGER is not set" in done.stderr
