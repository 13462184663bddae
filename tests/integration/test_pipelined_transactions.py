"""A transfer batch's transaction as one psycopg pipeline (`Database.run(pipelined=True)`).

BEGIN travels with the locking reads and COMMIT with the writes: two round trips for a
batch, counted here from libpq's own protocol trace. An error anywhere leaves nothing
behind, neither in the tables nor in the connection the pool lends next.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from holdfast.adapters import repository
from holdfast.adapters.database import Database
from holdfast.domain.transfers import ConfirmCommand
from holdfast.services import transfers
from holdfast.services.transfers import Operation
from tests.conftest import snapshot
from tests.integration.helpers import check_invariants
from tests.integration.test_concurrency import OPS, funded_account, open_account, reserve


@pytest.fixture
def solo(make_db: Callable[..., Database]) -> Database:
    """A process with one pooled connection and no injected faults: every unit of work
    below runs on the same, traceable connection, in one attempt."""
    return make_db(pool_size=1, faults=False)


@contextmanager
def protocol_trace(db: Database, path: Path) -> Iterator[None]:
    """libpq's trace of every message on the pool's one connection while the block runs."""
    raw = db.engine.raw_connection()
    driver = raw.driver_connection
    assert isinstance(driver, psycopg.Connection)
    raw.close()  # back to the pool, with the trace on
    with path.open("w") as sink:
        driver.pgconn.trace(sink.fileno())
        driver.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            yield
        finally:
            driver.pgconn.untrace()


def round_trips(path: Path) -> int:
    """Turns from the client's messages (F) to the server's answers (B)."""
    directions = [line.split("\t")[0] for line in path.read_text().splitlines() if line]
    return sum(1 for a, b in itertools.pairwise(directions) if (a, b) == ("F", "B"))


def test_a_batch_of_reserves_and_confirms_is_two_round_trips(solo: Database, tmp_path: Path):
    customer, payee = funded_account(solo, 1_000)
    held = reserve(customer, payee, 100)
    assert transfers.execute_alone(solo, [Operation(held, OPS)])[0].error is None
    batch = [
        Operation(reserve(customer, payee, 10), OPS),
        Operation(ConfirmCommand(held.id), OPS),  # its accounts come from its stored legs
        Operation(reserve(payee, customer, 5), OPS),
    ]
    trace = tmp_path / "libpq.trace"
    with protocol_trace(solo, trace):
        outcomes = transfers.execute_alone(solo, batch)
    assert [o.error for o in outcomes] == [None, None, None]
    assert round_trips(trace) == 2
    sent = [line for line in trace.read_text().splitlines() if "\tParse\t" in line]
    assert sum('"BEGIN ISOLATION LEVEL SERIALIZABLE"' in line for line in sent) == 1
    assert sum('"COMMIT"' in line for line in sent) == 1
    check_invariants(solo)


def test_a_unit_of_work_that_fails_after_its_writes_leaves_nothing(solo: Database):
    customer, payee = funded_account(solo, 1_000)
    before = snapshot(solo)

    def work(connection: sa.Connection) -> None:
        transfers.apply(connection, [Operation(reserve(customer, payee, 10), OPS)], solo.cipher)
        raise RuntimeError("the process dies between its writes and its commit")

    with pytest.raises(RuntimeError):
        solo.run(work, pipelined=True)
    assert snapshot(solo) == before
    lent_back(solo)


def test_a_write_refused_at_commit_fails_the_whole_unit_of_work(solo: Database):
    customer, payee = funded_account(solo, 1_000)
    before = snapshot(solo)

    def work(connection: sa.Connection) -> None:
        outcomes = transfers.apply(
            connection, [Operation(reserve(customer, payee, 10), OPS)], solo.cipher
        )
        assert outcomes[0].error is None  # queued, not sent: the writes go with COMMIT
        writes = repository.Writes()
        writes.execute("UPDATE accounts SET currency = NULL WHERE id = %(id)s", {"id": payee})
        writes.flush(connection)

    with pytest.raises(psycopg.errors.NotNullViolation):
        solo.run(work, pipelined=True)
    assert snapshot(solo) == before
    lent_back(solo)


def lent_back(db: Database) -> None:
    """The pool's connection is as the pool lends it: out of autocommit, in no transaction,
    so that a plain unit of work that fails is still rolled back."""
    raw = db.engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert isinstance(driver, psycopg.Connection)
        assert driver.autocommit is False
        assert driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    finally:
        raw.close()
    account = uuid.uuid4()

    def insert_then_fail(connection: sa.Connection) -> None:
        connection.execute(
            sa.text(
                "INSERT INTO accounts (id, currency, owner, status, normal_balance, "
                "debits_posted, credits_posted, debits_reserved, credits_reserved, metadata, "
                "created_at, updated_at) VALUES (:id, 'EUR', 'x', 'open', 'credit', 0, 0, 0, 0, "
                "'{}', now(), now())"
            ),
            {"id": account},
        )
        raise RuntimeError("fails after its insert")

    with pytest.raises(RuntimeError):
        db.run(insert_then_fail)
    with db.engine.connect() as connection:
        found = connection.execute(
            sa.text("SELECT count(*) FROM accounts WHERE id = :id"), {"id": account}
        ).scalar_one()
    assert found == 0
    open_account(db)  # and the next unit of work commits as usual
