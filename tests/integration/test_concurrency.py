"""Real transactions racing on the same rows: the exact outcome, every time.

"Instances" are separate Database objects (own engine, own group commit), as separate
function processes would be: their transactions really collide in PostgreSQL, at
SERIALIZABLE, and go through the retry loop.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

from holdfast.adapters.database import Database, FaultInjector, create_engine
from holdfast.domain.accounts import NormalBalance, OpenAccount
from holdfast.domain.actors import Actor
from holdfast.domain.transfers import CancelCommand, ConfirmCommand, Leg, ReserveCommand
from holdfast.services import accounts, transfers
from holdfast.services.transfers import Operation, Outcome
from tests.integration.helpers import check_invariants

T = TypeVar("T")
OPS = Actor("ops", frozenset({"operator"}))


@pytest.fixture
def instances(make_db: Callable[..., Database]) -> list[Database]:
    """Four function instances (processes) on one database."""
    return [make_db(pool_size=4) for _ in range(4)]


def open_account(db: Database, limit: int | None = 0) -> uuid.UUID:
    account_id = uuid.uuid4()
    command = OpenAccount(account_id, "EUR", "alice", NormalBalance.CREDIT, limit, {})
    accounts.open_account(db, command, OPS)
    return account_id


def reserve(
    debit: uuid.UUID,
    credit: uuid.UUID,
    amount: int,
    *,
    immediate: bool = False,
    id: uuid.UUID | None = None,
) -> ReserveCommand:
    return ReserveCommand(
        id or uuid.uuid4(),
        "EUR",
        (Leg(debit, credit, amount),),
        300,
        immediate,
        {},
        {"amount": amount, "immediate": immediate},
    )


def one(db: Database, command: object) -> Outcome:
    return transfers.execute(db, [Operation(command, OPS)])[0]  # type: ignore[arg-type]


def race(calls: list[Callable[[], T]]) -> list[T]:
    """Start every call at the same instant (a barrier) and collect the results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def funded_account(db: Database, amount: int) -> tuple[uuid.UUID, uuid.UUID]:
    bank, customer = open_account(db, limit=None), open_account(db)
    assert one(db, reserve(bank, customer, amount, immediate=True)).error is None
    return customer, open_account(db)


def test_32_reserves_on_10000_give_exactly_10_holds(
    db: Database, instances: list[Database]
) -> None:
    customer, payee = funded_account(db, 10_000)
    calls = [(lambda i=i: one(instances[i % 4], reserve(customer, payee, 1000))) for i in range(32)]
    outcomes = race(calls)
    codes = Counter("reserved" if o.error is None else o.error.code for o in outcomes)
    assert codes == {"reserved": 10, "insufficient_funds": 22}
    with db.engine.connect() as c:
        from sqlalchemy import text

        held = c.execute(
            text("SELECT count(*), sum(amount) FROM holds WHERE account_id = :a"), {"a": customer}
        ).one()
    assert tuple(held) == (10, 10_000)
    check_invariants(db)


def test_32_reserves_in_one_process_share_transactions(db: Database) -> None:
    customer, payee = funded_account(db, 10_000)
    outcomes = race([lambda: one(db, reserve(customer, payee, 1000)) for _ in range(32)])
    assert Counter(o.error.code if o.error else "ok" for o in outcomes) == {
        "ok": 10,
        "insufficient_funds": 22,
    }
    if db.faults is None:  # one writer at a time in a process: no serialization failures
        assert db.retries == 0
    check_invariants(db)


@pytest.mark.parametrize("round_", range(5))
def test_confirm_and_cancel_racing_have_exactly_one_winner(
    db: Database, instances: list[Database], round_: int
) -> None:
    customer, payee = funded_account(db, 5_000)
    command = reserve(customer, payee, 3_000)
    assert one(db, command).error is None
    confirm, cancel = race(
        [
            lambda: one(instances[0], ConfirmCommand(command.id)),
            lambda: one(instances[1], CancelCommand(command.id)),
        ]
    )
    winners = [o for o in (confirm, cancel) if o.error is None]
    assert len(winners) == 1
    loser = cancel if confirm.error is None else confirm
    assert loser.error is not None
    assert loser.error.code == (
        "transfer_confirmed" if confirm.error is None else "transfer_cancelled"
    )
    account = accounts.get_account(db, customer, OPS)
    if confirm.error is None:
        assert (account.posted, account.available) == (2_000, 2_000)
    else:
        assert (account.posted, account.available) == (5_000, 5_000)
    check_invariants(db)


def test_reserve_and_empty_cancel_racing_never_leave_an_orphan_hold(
    db: Database, instances: list[Database]
) -> None:
    customer, payee = funded_account(db, 50_000)
    for _ in range(10):
        command = reserve(customer, payee, 100)
        reserved, cancelled = race(
            [
                lambda command=command: one(instances[0], command),
                lambda command=command: one(instances[1], CancelCommand(command.id)),
            ]
        )
        assert cancelled.error is None  # a cancel always succeeds: release or fence
        final = transfers.get_transfer(db, command.id, OPS)[0]
        assert final.state.value == "cancelled"
        if reserved.error is not None:
            assert reserved.error.code == "transfer_cancelled"  # cancel came first: fenced
    assert accounts.get_account(db, customer, OPS).available == 50_000
    check_invariants(db)


def test_many_transfers_on_one_hot_account_across_instances(
    db: Database, instances: list[Database]
) -> None:
    hot = open_account(db, limit=None)
    payees = [open_account(db) for _ in range(8)]
    calls = [
        (lambda i=i: one(instances[i % 4], reserve(hot, payees[i % 8], 7, immediate=True)))
        for i in range(64)
    ]
    outcomes = race(calls)
    assert all(o.error is None for o in outcomes)
    assert accounts.get_account(db, hot, OPS).posted == -64 * 7
    check_invariants(db)


def test_duplicate_reserves_racing_give_one_hold_and_identical_answers(
    db: Database, instances: list[Database]
) -> None:
    customer, payee = funded_account(db, 10_000)
    command = reserve(customer, payee, 2_500)
    outcomes = race([lambda i=i: one(instances[i % 4], command) for i in range(16)])
    assert all(o.error is None for o in outcomes)
    assert len({str(o.body()) for o in outcomes}) == 1
    assert accounts.get_account(db, customer, OPS).available == 7_500
    check_invariants(db)


def test_retries_recover_from_injected_serialization_failures(
    make_db: Callable[..., Database],
) -> None:
    db = make_db(pool_size=4, faults=False)
    db.faults = faults = FaultInjector(rate=0.5, seed=7)
    customer, payee = funded_account(db, 1_000)
    for _ in range(20):
        assert one(db, reserve(customer, payee, 10)).error is None
    assert faults.injected > 5
    assert db.retries == faults.injected
    assert accounts.get_account(db, customer, OPS).available == 800
    check_invariants(db)


def test_retries_are_bounded_and_a_failed_transaction_changes_nothing(
    make_db: Callable[..., Database], db: Database
) -> None:
    from holdfast.domain.errors import SerializationFailure
    from tests.conftest import snapshot

    customer, payee = funded_account(db, 1_000)
    before = snapshot(db)
    always = make_db(pool_size=2, faults=False)
    always.faults, always.attempts_max = FaultInjector(rate=1.0), 4
    with pytest.raises(SerializationFailure):
        one(always, reserve(customer, payee, 10))
    assert always.faults.injected == 4
    assert always.retries == 3
    assert snapshot(db) == before


def test_a_dropped_connection_is_retried_transparently(db: Database, server_url: str) -> None:
    from sqlalchemy import text

    customer, payee = funded_account(db, 100)  # the pool now holds live connections
    admin = create_engine(server_url, pool_size=1)
    try:
        with admin.connect() as c:
            killed = c.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() AND datname = :d"
                ),
                {"d": db.engine.url.database},
            ).scalar()
            c.commit()
    finally:
        admin.dispose()
    assert killed >= 1
    retries = db.retries
    assert one(db, reserve(customer, payee, 10)).error is None
    assert db.retries > retries
    check_invariants(db)


# -- across currencies ----------------------------------------------------------------------


def open_in(db: Database, currency: str, limit: int | None = 0) -> uuid.UUID:
    account_id = uuid.uuid4()
    command = OpenAccount(account_id, currency, "bank", NormalBalance.CREDIT, limit, {})
    accounts.open_account(db, command, OPS)
    return account_id


def fund(db: Database, account: uuid.UUID, currency: str, amount: int) -> None:
    source = open_in(db, currency, None)
    command = ReserveCommand(
        uuid.uuid4(), currency, (Leg(source, account, amount),), 300, True, {}, {}
    )
    assert one(db, command).error is None


def fx_payment(
    eur_from: uuid.UUID,
    eur_to: uuid.UUID,
    usd_from: uuid.UUID,
    usd_to: uuid.UUID,
    *,
    eur: int = 10_000,
    usd: int = 10_800,
    immediate: bool = False,
) -> ReserveCommand:
    """EUR moves between two EUR accounts and USD between two USD accounts, as one."""
    return ReserveCommand(
        uuid.uuid4(),
        None,
        (Leg(eur_from, eur_to, eur, "EUR"), Leg(usd_from, usd_to, usd, "USD")),
        300,
        immediate,
        {},
        {"eur": eur, "usd": usd},
    )


def test_fx_payments_racing_for_both_currencies_reserve_exactly_what_both_allow(
    db: Database, instances: list[Database]
) -> None:
    """Euros for 5 payments, dollars for 3: exactly 3 are reserved, each in both currencies."""
    customer, position_eur = open_in(db, "EUR"), open_in(db, "EUR", None)
    position_usd, merchant = open_in(db, "USD"), open_in(db, "USD")
    fund(db, customer, "EUR", 5 * 10_000)
    fund(db, position_usd, "USD", 3 * 10_800)
    calls = [
        (
            lambda i=i: one(
                instances[i % 4], fx_payment(customer, position_eur, position_usd, merchant)
            )
        )
        for i in range(12)
    ]
    outcomes = race(calls)
    codes = Counter("reserved" if o.error is None else o.error.code for o in outcomes)
    assert codes == {"reserved": 3, "insufficient_funds": 9}
    assert accounts.get_account(db, customer, OPS).available == 2 * 10_000
    assert accounts.get_account(db, position_usd, OPS).available == 0
    assert accounts.get_account(db, position_eur, OPS).credits_reserved == 3 * 10_000
    assert accounts.get_account(db, merchant, OPS).credits_reserved == 3 * 10_800
    with db.engine.connect() as c:
        from sqlalchemy import text

        held = c.execute(text("SELECT count(*), count(DISTINCT transfer_id) FROM holds")).one()
    assert tuple(held) == (12, 3)  # four holds, two per currency, for each of the three
    check_invariants(db)


@pytest.mark.parametrize("round_", range(3))
def test_confirm_and_cancel_racing_on_an_fx_payment_move_both_currencies_or_neither(
    db: Database, instances: list[Database], round_: int
) -> None:
    customer, position_eur = open_in(db, "EUR"), open_in(db, "EUR", None)
    position_usd, merchant = open_in(db, "USD"), open_in(db, "USD")
    fund(db, customer, "EUR", 10_000)
    fund(db, position_usd, "USD", 10_800)
    command = fx_payment(customer, position_eur, position_usd, merchant)
    assert one(db, command).error is None
    confirm, cancel = race(
        [
            lambda: one(instances[0], ConfirmCommand(command.id)),
            lambda: one(instances[1], CancelCommand(command.id)),
        ]
    )
    assert [o.error is None for o in (confirm, cancel)].count(True) == 1
    moved = confirm.error is None
    posted = [
        accounts.get_account(db, a, OPS).posted
        for a in (customer, position_eur, position_usd, merchant)
    ]
    assert posted == ([0, 10_000, 0, 10_800] if moved else [10_000, 0, 10_800, 0])
    check_invariants(db)


def test_fx_payments_and_their_refunds_racing_across_instances_never_deadlock(
    db: Database, instances: list[Database]
) -> None:
    """Both directions lock the same four accounts, in id order whatever the currency."""
    customer, position_eur = open_in(db, "EUR"), open_in(db, "EUR", None)
    position_usd, merchant = open_in(db, "USD"), open_in(db, "USD")
    fund(db, customer, "EUR", 100_000)
    fund(db, position_usd, "USD", 100_000)
    fund(db, merchant, "USD", 100_000)
    commands = [
        fx_payment(
            *(
                (customer, position_eur, position_usd, merchant)
                if i % 2
                else (position_eur, customer, merchant, position_usd)
            ),
            eur=100 + i,
            usd=108 + i,
            immediate=True,
        )
        for i in range(16)
    ]
    outcomes = race([(lambda i=i: one(instances[i % 4], commands[i])) for i in range(16)])
    assert [o.error for o in outcomes] == [None] * 16
    paid_eur = sum(100 + i for i in range(16) if i % 2)
    refunded_eur = sum(100 + i for i in range(16) if not i % 2)
    paid_usd = sum(108 + i for i in range(16) if i % 2)
    refunded_usd = sum(108 + i for i in range(16) if not i % 2)
    assert accounts.get_account(db, customer, OPS).posted == 100_000 - paid_eur + refunded_eur
    assert accounts.get_account(db, merchant, OPS).posted == 100_000 + paid_usd - refunded_usd
    check_invariants(db)
