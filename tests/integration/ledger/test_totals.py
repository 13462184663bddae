"""The running totals give exactly the plain sums: balance and trial balance as of any time.

The reference ("old") computation is the plain sum over `ledger_entries` with
`posted_at <= as_of` (`adapters.ledger.posted_totals` / `trial_totals`, what the reads did
before the totals); the new one is `services.ledger.balance` / `trial_balance`. They are
compared at every interesting instant (each posted_at, a microsecond either side, before and
after everything) with entries sealed in small blocks, entries sealed late (posted before
entries already sealed), entries still queued, and a confirm not committed yet.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from uuid import UUID

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from holdfast import limits
from holdfast.adapters import ledger as repo
from holdfast.adapters.database import Database
from holdfast.adapters.signing import Ed25519Keyring, Ed25519Signer
from holdfast.domain.accounts import Direction
from holdfast.domain.errors import AccountNotFound
from holdfast.domain.transfers import entry_id
from holdfast.services import ledger as service
from tests.integration.ledger import support

MICROSECOND = timedelta(microseconds=1)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 3 entries: checkpoints of a few entries then hold several seal points."""
    monkeypatch.setattr(limits, "ledger_totals_block_entries", 3)


def post(
    connection: sa.Connection,
    debit: UUID,
    credit: UUID,
    amount: int,
    posted_at: datetime,
    currency: str = "EUR",
) -> None:
    """One single-leg transfer's entries and queue rows, as a confirm writes them, at a chosen
    posted_at (a confirm that started then)."""
    transfer_id = uuid.uuid4()
    for direction, account in ((Direction.DEBIT, debit), (Direction.CREDIT, credit)):
        id_ = entry_id(transfer_id, 0, direction)
        connection.execute(
            sa.text(
                "INSERT INTO ledger_entries (id, transfer_id, leg, direction, account_id, "
                "amount, currency, posted_at) VALUES (:id, :t, 0, :d, :a, :amount, :c, :p)"
            ),
            {
                "id": id_,
                "t": transfer_id,
                "d": str(direction),
                "a": account,
                "amount": amount,
                "c": currency,
                "p": posted_at,
            },
        )
        connection.execute(
            sa.text("INSERT INTO ledger_unsequenced (entry_id, posted_at) VALUES (:id, :p)"),
            {"id": id_, "p": posted_at},
        )


def old_balance(db: Database, account_id: UUID, as_of: datetime) -> tuple[int, int, int]:
    def work(connection: sa.Connection) -> tuple[int, int, int]:
        repo.snapshot(connection, read_only=True)
        totals = repo.posted_totals(connection, account_id, as_of)
        debits, debit_count = totals.get("debit", (0, 0))
        credits, credit_count = totals.get("credit", (0, 0))
        return debits, credits, debit_count + credit_count

    found: tuple[int, int, int] = db.run(work)
    return found


def old_trial(db: Database, as_of: datetime) -> dict[str, dict[str, int]]:
    def work(connection: sa.Connection) -> dict[str, dict[str, int]]:
        repo.snapshot(connection, read_only=True)
        return repo.trial_totals(connection, as_of)

    found: dict[str, dict[str, int]] = db.run(work)
    return found


def instants(db: Database, accounts: Sequence[UUID]) -> list[datetime]:
    with db.engine.connect() as connection:
        repo.snapshot(connection, read_only=True)  # SERIALIZABLE would abort the open confirm
        times = [
            row.posted_at
            for row in connection.execute(
                sa.text(
                    "SELECT DISTINCT posted_at FROM ledger_entries WHERE account_id = ANY(:ids)"
                ),
                {"ids": list(accounts)},
            )
        ]
    around = {t + d for t in times for d in (-MICROSECOND, timedelta(0), MICROSECOND)}
    if times:
        around |= {min(times) - timedelta(days=1), max(times) + timedelta(days=1)}
    return sorted(around)


def assert_same_answers(
    db: Database, accounts: Sequence[UUID], at: Iterable[datetime] | None = None
) -> int:
    """New == old for every account and the trial balance at every instant; how many compared."""
    compared = 0
    for as_of in instants(db, accounts) if at is None else at:
        assert service.trial_balance(db, as_of)[1] == old_trial(db, as_of), as_of
        for account in accounts:
            try:
                found = service.balance(db, account, as_of)
            except AccountNotFound:  # before the account was opened: so was the old answer
                continue
            new = (found.debits_posted, found.credits_posted, found.entries)
            assert new == old_balance(db, account, as_of), (account, as_of)
            compared += 1
    return compared


def accounts_and_start(db: Database, count: int) -> tuple[list[UUID], datetime]:
    accounts = support.open_accounts(db, count)
    with db.engine.connect() as connection:
        created = connection.execute(
            sa.text("SELECT max(created_at) FROM accounts WHERE id = ANY(:ids)"), {"ids": accounts}
        ).scalar_one()
    return accounts, created + timedelta(seconds=1)


def test_late_and_queued_entries_give_the_plain_sums(db: Database, signer: Ed25519Signer) -> None:
    (a, b, c), start = accounts_and_start(db, 3)
    second = timedelta(seconds=1)
    with db.engine.begin() as connection:
        for i in range(8):
            post(connection, a, b, 10 + i, start + i * second)
    assert_same_answers(db, [a, b, c])  # all queued, nothing sealed
    service.seal_once(db, signer, batch=5)  # blocks of 3 and 3 (a transfer is 2 entries)
    with db.engine.begin() as connection:  # late: posted before entries already sealed
        post(connection, b, c, 100, start + 0.5 * second)
        post(connection, c, a, 200, start - second, currency="USD")
    assert_same_answers(db, [a, b, c])  # sealed, queued late, queued on time
    while service.seal_once(db, signer, batch=4) is not None:
        pass
    with db.engine.begin() as connection:  # very late: before everything sealed so far
        post(connection, a, c, 7, start + 2.5 * second)
        post(connection, b, a, 9, start + 20 * second)
    service.seal_once(db, signer, batch=2)
    assert_same_answers(db, [a, b, c])
    support.seal_all(db, signer)
    assert_same_answers(db, [a, b, c])
    with db.engine.connect() as connection:
        lateness = connection.execute(
            sa.text("SELECT lateness_max FROM ledger_seal_points ORDER BY last_seq DESC LIMIT 1")
        ).scalar_one()
    assert lateness == 4.5 * second  # start + 2.5 s sealed after start + 7 s
    assert totals_findings(db, signer) == []


def totals_findings(db: Database, signer: Ed25519Signer) -> list[str]:
    """The check's findings about the totals (entries written here bypass account counters)."""
    findings = service.check(db, Ed25519Keyring([signer.public_key])).findings
    return [f for f in findings if "totals" in f or "seal point" in f]


def test_a_confirm_that_commits_after_a_seal(db: Database, signer: Ed25519Signer) -> None:
    """A real confirm, open while others commit and are sealed: invisible, then queued with an
    earlier posted_at than sealed entries, then sealed late; same answers all along."""
    source, target, other, another = support.open_accounts(db, 4)
    late = support.reserve([(source, target, 7)], immediate=False)
    support.pay(db, [late])
    with support.confirm_held_open(db, late.id):
        support.pay(db, [support.reserve([(other, another, 1)]) for _ in range(3)])
        support.seal_all(db, signer)
        assert_same_answers(db, [source, target, other, another])
    assert_same_answers(db, [source, target, other, another])
    support.pay(db, [support.reserve([(another, source, 5)])])
    support.seal_all(db, signer)
    assert_same_answers(db, [source, target, other, another])
    assert service.check(db, Ed25519Keyring([signer.public_key])).ok


def test_the_default_as_of_is_now_and_counts_queued_entries(db: Database, signer: Ed25519Signer):
    a, b = support.open_accounts(db, 2)
    support.pay(db, [support.reserve([(a, b, 5)]) for _ in range(4)])
    support.seal_all(db, signer)
    support.pay(db, [support.reserve([(b, a, 3)])])  # queued
    found = service.balance(db, a, None)
    assert (found.debits_posted, found.credits_posted, found.entries) == (20, 3, 5)
    _, trial = service.trial_balance(db, None)
    assert trial["EUR"]["debit"] == trial["EUR"]["credit"] >= 23


# One step of a history: post a transfer (debit, credit, amount, offset in ms from the start,
# currency), or seal one batch of at most n entries.
STEPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("post"),
            st.integers(0, 3),
            st.integers(0, 3),
            st.integers(1, 1_000),
            st.integers(0, 40),
            st.sampled_from(["EUR", "EUR", "USD"]),
        ),
        st.tuples(st.just("seal"), st.integers(1, 9)),
    ),
    min_size=1,
    max_size=30,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=STEPS, probes=st.lists(st.integers(-2, 42), min_size=1, max_size=6))
def test_property_totals_equal_the_plain_sums(
    db: Database, signer: Ed25519Signer, steps: list[tuple[object, ...]], probes: list[int]
) -> None:
    """Any interleaving of confirms (at any posted_at, so often late) and seals of any size:
    the answers from the totals equal the plain sums, at chosen instants and at every one."""
    accounts, start = accounts_and_start(db, 4)
    for step in steps:
        if step[0] == "seal":
            service.seal_once(db, signer, batch=int(step[1]))  # type: ignore[call-overload]
            continue
        _, debit, credit, amount, offset, currency = step
        if debit == credit:
            continue
        with db.engine.begin() as connection:
            post(
                connection,
                accounts[debit],  # type: ignore[index]
                accounts[credit],  # type: ignore[index]
                amount,  # type: ignore[arg-type]
                start + timedelta(milliseconds=offset),  # type: ignore[arg-type]
                str(currency),
            )
    at = [start + timedelta(milliseconds=p) for p in probes]
    assert_same_answers(db, accounts, at)
    assert_same_answers(db, accounts)


def test_the_check_names_every_changed_total(db: Database, signer: Ed25519Signer) -> None:
    accounts = support.open_accounts(db, 4)
    support.random_payments(db, accounts, 30)
    support.seal_all(db, signer)
    assert totals_findings(db, signer) == []
    with db.engine.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE ledger_account_totals SET debits = debits + 1 "
                "WHERE (account_id, last_seq) IN (SELECT account_id, last_seq "
                "FROM ledger_account_totals ORDER BY last_seq LIMIT 1)"
            )
        )
        connection.execute(
            sa.text("UPDATE ledger_currency_totals SET credits = credits - 1 WHERE last_seq = 3")
        )
        connection.execute(
            sa.text(
                "UPDATE ledger_seal_points SET posted_at_max = posted_at_max + interval '1 hour' "
                "WHERE first_seq = 4"
            )
        )
    findings = totals_findings(db, signer)
    assert any("ledger_account_totals holds" in f for f in findings), findings
    assert any(f.startswith("currency EUR at seq 3: ledger_currency_totals") for f in findings)
    assert any(f.startswith("seal point 4..6: its times differ") for f in findings), findings


def test_the_migration_backfills_history_sealed_before_it(
    db: Database, signer: Ed25519Signer
) -> None:
    """0006 derives the totals of existing checkpoints (one block each) from the entries."""
    migration = importlib.import_module("holdfast.adapters.migrations.versions.0006_ledger_totals")
    accounts = support.open_accounts(db, 5)
    support.random_payments(db, accounts, 40)
    support.seal_all(db, signer)
    with db.engine.begin() as connection:
        for table in reversed(migration.TABLES):
            connection.execute(sa.text(f"DELETE FROM {table}"))  # as before the migration
        for statement in migration.BACKFILL:
            connection.execute(sa.text(statement))
        points = connection.execute(sa.text("SELECT count(*) FROM ledger_seal_points")).scalar()
    assert points == len(service.list_checkpoints(db, after=0, limit=1000))
    assert totals_findings(db, signer) == []
    assert_same_answers(db, accounts)
    support.random_payments(db, accounts, 10, seed=3)  # the sealer continues from there
    support.seal_all(db, signer)
    assert totals_findings(db, signer) == []
    assert_same_answers(db, accounts)
