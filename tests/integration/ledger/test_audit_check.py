"""`holdfast audit check` recomputes the proof from the database and names what was changed;
the functions' role cannot change the ledger's history at all."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from psycopg import errors as pg_errors
from sqlalchemy.exc import ProgrammingError

from holdfast import bootstrap
from holdfast.adapters.database import Database, create_engine
from holdfast.adapters.signing import Ed25519Keyring
from holdfast.entrypoints.cli import main
from holdfast.services import ledger as service
from tests.integration.ledger import support

ROLE = "holdfast_functions"
CHANGES = {
    "ledger_entries": "amount = amount + 1",
    "ledger_sequence": "seq = seq + 1",
    "ledger_checkpoints": "signature = signature",
    "ledger_keys": "key_id = key_id",
}


@pytest.fixture
def sealed(db, signer):
    accounts = support.open_accounts(db, 4)
    support.random_payments(db, accounts, 10, seed=5, per_batch=2)
    while service.seal_once(db, signer, batch=8) is not None:
        pass
    return accounts


def audit_check(runtime, database_url, *args: str) -> tuple[int, str]:
    env = {  # the settings the ledger function runs with: the configured key is trusted
        "HOLDFAST_DATABASE_URL": database_url,
        "HOLDFAST_HOME": str(runtime.settings.home),
        "HOLDFAST_LEDGER_SIGNING_KEY_FILE": str(runtime.settings.ledger_signing_key_file),
    }
    result = CliRunner().invoke(main, ["audit", "check", *args], env=env)
    return result.exit_code, result.stdout


def entry_id_at(db: Database, seq: int) -> uuid.UUID:
    with db.engine.connect() as c:
        found: uuid.UUID = c.execute(
            sa.text("SELECT entry_id FROM ledger_sequence WHERE seq = :s"), {"s": seq}
        ).scalar_one()
    return found


def tamper(db: Database, statement: str, **params: object) -> None:
    """As the database's owner (an operator gone rogue), bypassing foreign keys."""
    with db.engine.begin() as c:
        c.execute(sa.text("SET LOCAL session_replication_role = replica"))
        c.execute(sa.text(statement), params)


def test_an_untouched_database_checks_out(runtime, database_url, sealed):
    code, out = audit_check(runtime, database_url)
    assert code == 0, out
    assert out.startswith("OK (database): ")
    code, out = audit_check(runtime, database_url, "--last", "1")
    assert code == 0, out


TAMPERING = {
    "amount changed": (
        "UPDATE ledger_entries SET amount = amount + 1 WHERE id = :entry",
        "seq 5 (entry {entry}): entry seq 5 is not the entry sealed as seq 5",
    ),
    "account changed": (
        "UPDATE ledger_entries SET account_id = gen_random_uuid() WHERE id = :entry",
        "seq 5 (entry {entry}): entry seq 5 is not the entry sealed as seq 5",
    ),
    "entry deleted": (
        "DELETE FROM ledger_entries WHERE id = :entry",
        "seq 5: entry {entry} was deleted from ledger_entries",
    ),
    "sealed order rewritten": (
        "UPDATE ledger_sequence SET account_id = gen_random_uuid() WHERE entry_id = :entry",
        "seq 5: ledger_sequence names account",
    ),
    "sealed row moved to another checkpoint": (
        "UPDATE ledger_sequence SET checkpoint = checkpoint + 1 WHERE entry_id = :entry",
        "seq 5 is in ledger_sequence but outside its checkpoint",
    ),
    "checkpoint signature changed": (
        "UPDATE ledger_checkpoints SET signature = repeat('0', 128) WHERE number = 1",
        "checkpoint 1: checkpoint 1: the signature does not verify",
    ),
    "entry slipped in": (
        "INSERT INTO ledger_entries SELECT gen_random_uuid(), gen_random_uuid(), 0, direction, "
        "account_id, amount, currency, posted_at FROM ledger_entries WHERE id = :entry",
        "is neither sealed nor queued: inserted directly",
    ),
    "account counters changed": (
        "UPDATE accounts SET credits_posted = credits_posted + 1 "
        "WHERE id = (SELECT account_id FROM ledger_entries WHERE id = :entry)",
        "posted counters debits",
    ),
}


@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_a_change_in_the_database_is_reported(db, runtime, database_url, sealed, kind):
    statement, expected = TAMPERING[kind]
    entry = entry_id_at(db, 5)
    tamper(db, statement, entry=entry)
    code, out = audit_check(runtime, database_url)
    assert code == 1, out
    assert expected.format(entry=entry) in out, out
    assert out.rstrip().splitlines()[-1].startswith("FAILED ")


def test_the_functions_role_can_insert_and_read_history_but_never_change_it(db, sealed):
    with db.engine.connect() as c:
        c.execute(sa.text(f"SET ROLE {ROLE}"))
        assert c.execute(sa.text("SELECT count(*) FROM ledger_entries")).scalar_one() > 0
        c.execute(
            sa.text(
                "INSERT INTO ledger_entries (id, transfer_id, leg, direction, account_id, amount, "
                "currency, posted_at) VALUES (gen_random_uuid(), gen_random_uuid(), 0, 'debit', "
                "gen_random_uuid(), 1, 'EUR', now())"
            )
        )
        c.rollback()
        for table, change in CHANGES.items():
            for statement in (
                f"UPDATE {table} SET {change}",
                f"DELETE FROM {table}",
                f"TRUNCATE {table}",
            ):
                c.execute(sa.text(f"SET ROLE {ROLE}"))
                with pytest.raises(ProgrammingError) as refused:
                    c.execute(sa.text(statement))
                assert isinstance(refused.value.orig, pg_errors.InsufficientPrivilege), statement
                c.rollback()


def test_transfers_and_sealing_run_under_the_functions_role(database_url, signer, settings):
    engine = create_engine(database_url, pool_size=2)
    sa.event.listen(engine, "connect", lambda dbapi, record: dbapi.execute(f"SET ROLE {ROLE}"))
    guarded = Database(engine, cipher=bootstrap.metadata_cipher(settings))
    try:
        accounts = support.open_accounts(guarded, 3)
        support.random_payments(guarded, accounts, 6)
        assert support.seal_all(guarded, signer)
        with guarded.engine.connect() as c:
            assert c.execute(sa.text("SELECT current_user")).scalar_one() == ROLE
        assert service.check(guarded, Ed25519Keyring([signer.public_key])).ok
    finally:
        guarded.dispose()
