"""A transfer batch's transaction as one psycopg pipeline (`Database.run(pipelined=True)`).

BEGIN travels with the locking reads and COMMIT with the writes: two round trips for a
batch, counted here from libpq's own protocol trace. An error anywhere leaves nothing
behind, neither in the tables nor in the connection the pool lends next.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from holdfast.adapters import repository
from holdfast.adapters.database import Database
from holdfast.domain.errors import TransientError
from holdfast.domain.transfers import Command, ConfirmCommand
from holdfast.entrypoints.runtime import Runtime
from holdfast.services import ledger, transfers
from holdfast.services.transfers import Operation, Outcome
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


def test_two_writers_and_a_sealer_racing_confirm_every_pair(
    make_db: Callable[..., Database], runtime: Runtime
):
    """Two transfer processes (own engines, own group commit) reserve and confirm on the same
    few accounts while a sealer seals their entries: at SERIALIZABLE their statements meet
    40001 often, in the middle of a pipeline whose later statements the server then skips,
    the preparations psycopg queued included (it prepares a statement at its 5th use).
    Every retry must then run cleanly. The only failure a caller may see is a transient one
    (retries used up: a 503), which it retries with the same id, as clients do; anything
    else, such as a statement psycopg counted as prepared but the server never made (26000,
    a 500), fails the test. No injected faults: the conflicts here are real ones."""
    writers = [make_db(pool_size=4, faults=False) for _ in range(2)]
    sealer = make_db(pool_size=1, cipher=False, faults=False)
    bank = open_account(writers[0], limit=None)
    accounts = [open_account(writers[0]) for _ in range(6)]
    for account in accounts:
        command = reserve(bank, account, 1_000_000, immediate=True)
        assert transfers.execute(writers[0], [Operation(command, OPS)])[0].error is None
    errors: list[BaseException] = []
    stop = threading.Event()

    def as_a_client(writer: Database, command: Command) -> None:
        for _ in range(CLIENT_RETRIES):
            try:
                outcome = transfers.execute(writer, [Operation(command, OPS)])[0]
            except TransientError:
                continue  # a 503: the client sends the same request again
            assert outcome.error is None, outcome.error
            return
        raise AssertionError(f"{CLIENT_RETRIES} answers of 503 in a row")

    def pairs(writer: Database, seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(30):
                debit, credit = rng.sample(accounts, 2)
                held = reserve(debit, credit, 1)
                as_a_client(writer, held)
                as_a_client(writer, ConfirmCommand(held.id))
        except BaseException as error:  # reported below, with its kind
            errors.append(error)

    def seal() -> None:
        while not stop.is_set():
            ledger.seal_once(sealer, runtime.ledger_signer, batch=20)

    with ThreadPoolExecutor(13) as pool:
        sealing = pool.submit(seal)
        racing = [pool.submit(pairs, writers[index % 2], index) for index in range(12)]
        for future in racing:
            future.result()
        stop.set()
        sealing.result()
    assert errors == []
    assert sum(w.retries for w in writers) > 0  # the writers did meet 40001
    check_invariants(writers[0])


CLIENT_RETRIES = 5


def test_reads_refused_while_their_statements_are_being_prepared_are_retried(
    solo: Database, db: Database
):
    """A 40001 on the first locking read makes the server skip the rest of the pipeline,
    the preparations psycopg queued for the next statements included (it prepares a
    statement at its Nth use), while psycopg already counts them as prepared. The retry
    must not name a statement the server never made (26000, not retried: a 500 on every
    later use). Found by bench/run.py with two workers; arranged here on the one pooled
    connection with psycopg's public `prepare_threshold` at 1: the first confirm's first
    attempt is refused (nothing is prepared yet, and the connection learns to roll back),
    its retry is each statement's first counted use, and the second confirm's first attempt,
    the one that prepares, is refused too."""
    customer, payee = funded_account(db, 1_000)
    held = [reserve(customer, payee, 100) for _ in range(2)]
    assert all(o.error is None for o in transfers.execute(db, [Operation(h, OPS) for h in held]))
    raw = solo.engine.raw_connection()
    assert isinstance(raw.driver_connection, psycopg.Connection)
    raw.driver_connection.prepare_threshold = 1
    raw.close()
    for command in held:
        confirmed = confirm_refused_once(solo, db, command.id)
        assert confirmed.error is None
    assert solo.retries == 2
    check_invariants(solo)


def confirm_refused_once(solo: Database, db: Database, transfer_id: uuid.UUID) -> Outcome:
    """Confirm on `solo` while another session updates the transfer: the confirm's locking
    read waits for that session, which then commits, so the read fails with 40001."""
    with db.engine.connect() as other, ThreadPoolExecutor(1) as pool:
        other.execute(
            sa.text("UPDATE transfers SET state = state WHERE id = :id"), {"id": transfer_id}
        )
        operation = Operation(ConfirmCommand(transfer_id), OPS)
        confirm = pool.submit(transfers.execute_alone, solo, [operation])
        wait_for_a_lock_wait(other)
        other.commit()
        return confirm.result(timeout=60)[0]


def wait_for_a_lock_wait(connection: sa.Connection) -> None:
    """Until another session of this database waits for a row lock (bounded: 30 s)."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    deadline = time.monotonic() + 30
    while connection.execute(query).scalar_one() == 0:
        assert time.monotonic() < deadline, "the confirm never waited for the row lock"
        time.sleep(0.01)
