"""The TCC state machine and its money rules on an in-memory Book (no database)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from holdfast.domain.accounts import Account, NormalBalance, Status
from holdfast.domain.actors import Actor
from holdfast.domain.errors import (
    AccountNotFound,
    AccountNotOpen,
    AmountExceedsReserved,
    CurrencyMismatch,
    ExistsWithDifferentFields,
    InsufficientFunds,
    InvalidInput,
    TransferCancelled,
    TransferConfirmed,
    TransferExpired,
    TransferNotFound,
)
from holdfast.domain.transfers import (
    Book,
    CancelCommand,
    ConfirmCommand,
    Leg,
    ReserveCommand,
    State,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ALICE = Actor("alice", frozenset({"transfers:write"}))
MALLORY = Actor("mallory", frozenset({"transfers:write"}))
OPERATOR = Actor("ops", frozenset({"operator"}))


def make_account(owner: str = "alice", limit: int | None = 0, funds: int = 0) -> Account:
    account = Account(uuid4(), "EUR", owner, NormalBalance.CREDIT, limit, {}, T0)
    account.credits_posted = funds
    return account


def book(*accounts: Account, now: datetime = T0) -> Book:
    return Book(now=now, accounts={a.id: a for a in accounts}, transfers={})


def reserve(
    debit: Account,
    credit: Account,
    amount: int,
    *,
    id: UUID | None = None,
    immediate: bool = False,
    timeout_s: int = 60,
    legs: tuple[Leg, ...] | None = None,
) -> ReserveCommand:
    legs = legs or (Leg(debit.id, credit.id, amount),)
    return ReserveCommand(
        id=id or uuid4(),
        currency="EUR",
        legs=legs,
        timeout_s=timeout_s,
        immediate=immediate,
        metadata={},
        request={"amount": amount, "legs": len(legs), "immediate": immediate},
    )


def test_reserve_holds_funds_and_posts_nothing() -> None:
    a, b = make_account(funds=100), make_account("bob")
    ledger = book(a, b)
    answer = ledger.reserve(reserve(a, b, 60), ALICE)
    assert answer.transfer.state is State.RESERVED
    assert answer.transfer.expires_at == T0 + timedelta(seconds=60)
    assert (a.available, a.posted, b.available) == (40, 100, 0)
    assert ledger.entries == []
    assert [e.kind for e in ledger.events] == ["reserved"]


def test_confirm_posts_balanced_entries_and_releases_the_hold() -> None:
    a, b = make_account(funds=100), make_account("bob")
    ledger = book(a, b)
    command = reserve(a, b, 60)
    ledger.reserve(command, ALICE)
    answer = ledger.confirm(ConfirmCommand(command.id), ALICE)
    assert answer.transfer.state is State.CONFIRMED
    assert (a.posted, a.available, a.debits_reserved) == (40, 40, 0)
    assert (b.posted, b.credits_reserved) == (60, 0)
    assert sorted((e.direction.value, e.amount) for e in ledger.entries) == [
        ("credit", 60),
        ("debit", 60),
    ]


def test_partial_confirm_posts_the_amount_and_releases_the_rest() -> None:
    a, b = make_account(funds=100), make_account("bob")
    ledger = book(a, b)
    command = reserve(a, b, 60)
    ledger.reserve(command, ALICE)
    ledger.confirm(ConfirmCommand(command.id, 25), ALICE)
    assert (a.posted, a.available, b.posted) == (75, 75, 25)
    # The same confirm again is a replay; another amount is a conflict.
    assert ledger.confirm(ConfirmCommand(command.id, 25), ALICE).transfer.confirmed_amount == 25
    with pytest.raises(ExistsWithDifferentFields):
        ledger.confirm(ConfirmCommand(command.id, 30), ALICE)
    with pytest.raises(ExistsWithDifferentFields):
        ledger.confirm(ConfirmCommand(command.id), ALICE)


def test_partial_confirm_rules() -> None:
    a, b, c = make_account(funds=100), make_account("bob"), make_account("carol")
    ledger = book(a, b, c)
    single = reserve(a, b, 10)
    multi = reserve(a, b, 0, legs=(Leg(a.id, b.id, 5), Leg(a.id, c.id, 5)))
    ledger.reserve(single, ALICE)
    ledger.reserve(multi, ALICE)
    with pytest.raises(AmountExceedsReserved):
        ledger.confirm(ConfirmCommand(single.id, 11), ALICE)
    with pytest.raises(InvalidInput):
        ledger.confirm(ConfirmCommand(multi.id, 5), ALICE)
    assert a.available == 80


def test_insufficient_funds_changes_nothing() -> None:
    a, b = make_account(funds=50, limit=10), make_account("bob")
    ledger = book(a, b)
    ledger.reserve(reserve(a, b, 60), ALICE)  # 50 + 10 overdraft: exactly allowed
    with pytest.raises(InsufficientFunds):
        ledger.reserve(reserve(a, b, 1), ALICE)
    assert a.available == -10
    assert len(ledger.transfers) == 1


def test_currency_mismatch_and_closed_accounts_are_refused() -> None:
    a, b = make_account(funds=50), make_account("bob")
    usd = Account(uuid4(), "USD", "bob", NormalBalance.CREDIT, 0, {}, T0)
    frozen = make_account("bob")
    frozen.status = Status.FROZEN
    ledger = book(a, b, usd, frozen)
    with pytest.raises(CurrencyMismatch):
        ledger.reserve(reserve(a, usd, 1), ALICE)
    with pytest.raises(AccountNotOpen):
        ledger.reserve(reserve(a, frozen, 1), ALICE)
    assert ledger.transfers == {} and a.available == 50


def test_debiting_someone_elses_account_looks_like_a_missing_account() -> None:
    a, b = make_account(funds=50), make_account("bob", funds=50)
    ledger = book(a, b)
    with pytest.raises(AccountNotFound):
        ledger.reserve(reserve(b, a, 1), ALICE)
    assert ledger.reserve(reserve(b, a, 1), OPERATOR).transfer.state is State.RESERVED


def test_replay_returns_the_first_answer_and_different_fields_conflict() -> None:
    a, b = make_account(funds=100), make_account("bob")
    ledger = book(a, b)
    command = reserve(a, b, 10)
    first = ledger.reserve(command, ALICE)
    ledger.confirm(ConfirmCommand(command.id), ALICE)
    again = ledger.reserve(command, ALICE)
    assert again.transfer.state is State.RESERVED  # the first answer, not the current state
    assert again.transfer.expires_at == first.transfer.expires_at
    assert a.available == 90
    changed = dataclasses.replace(command, request={**command.request, "amount": 11})
    with pytest.raises(ExistsWithDifferentFields) as error:
        ledger.reserve(changed, ALICE)
    assert error.value.fields == ["amount"]


def test_empty_cancel_fences_the_id_against_a_later_reserve() -> None:
    a, b = make_account(funds=100), make_account("bob")
    ledger = book(a, b)
    command = reserve(a, b, 10)
    assert ledger.cancel(CancelCommand(command.id), ALICE).transfer.state is State.CANCELLED
    assert ledger.cancel(CancelCommand(command.id), ALICE).transfer.state is State.CANCELLED
    with pytest.raises(TransferCancelled):
        ledger.reserve(command, ALICE)
    with pytest.raises(TransferCancelled):
        ledger.confirm(ConfirmCommand(command.id), ALICE)
    assert a.available == 100 and a.debits_reserved == 0


def test_cancel_releases_and_confirm_after_cancel_is_refused() -> None:
    a, b = make_account(funds=100), make_account("bob")
    ledger = book(a, b)
    command = reserve(a, b, 10)
    ledger.reserve(command, ALICE)
    ledger.cancel(CancelCommand(command.id), ALICE)
    assert a.available == 100
    with pytest.raises(TransferCancelled):
        ledger.confirm(ConfirmCommand(command.id), ALICE)


def test_cancel_after_confirm_is_refused() -> None:
    a, b = make_account(funds=100), make_account("bob")
    ledger = book(a, b)
    command = reserve(a, b, 10, immediate=True)
    assert ledger.reserve(command, ALICE).transfer.state is State.CONFIRMED
    with pytest.raises(TransferConfirmed):
        ledger.cancel(CancelCommand(command.id), ALICE)
    assert ledger.confirm(ConfirmCommand(command.id), ALICE).transfer.state is State.CONFIRMED


def test_a_lapsed_hold_is_expired_by_confirm_and_cancel() -> None:
    a, b = make_account(funds=100), make_account("bob")
    ledger = book(a, b)
    first, second = reserve(a, b, 10, timeout_s=5), reserve(a, b, 20, timeout_s=5)
    ledger.reserve(first, ALICE)
    ledger.reserve(second, ALICE)
    later = Book(
        now=T0 + timedelta(seconds=5), accounts=ledger.accounts, transfers=ledger.transfers
    )
    a.debits_lapsed, b.credits_lapsed = 30, 30  # what the repository reads at that instant
    assert a.available == 100
    with pytest.raises(TransferExpired):
        later.confirm(ConfirmCommand(first.id), ALICE)
    assert later.transfers[first.id].state is State.EXPIRED
    assert later.cancel(CancelCommand(second.id), ALICE).transfer.state is State.EXPIRED
    assert (a.debits_reserved, a.debits_lapsed, a.available) == (0, 0, 100)
    assert [e.kind for e in later.events] == ["expired", "expired"]


def test_exactly_at_expires_at_the_transfer_reads_as_expired() -> None:
    a, b = make_account(funds=100), make_account("bob")
    transfer = book(a, b).reserve(reserve(a, b, 10, timeout_s=5), ALICE).transfer
    assert (
        transfer.effective_state(T0 + timedelta(seconds=5) - timedelta(microseconds=1))
        is State.RESERVED
    )
    assert transfer.effective_state(T0 + timedelta(seconds=5)) is State.EXPIRED


def test_strangers_cannot_see_or_touch_a_transfer() -> None:
    a, b = make_account(funds=100), make_account("bob")
    ledger = book(a, b)
    command = reserve(a, b, 10)
    ledger.reserve(command, ALICE)
    for operation in (ConfirmCommand(command.id), CancelCommand(command.id)):
        with pytest.raises(TransferNotFound):
            ledger.apply(operation, MALLORY)
    with pytest.raises(TransferNotFound):
        ledger.reserve(command, MALLORY)
    assert ledger.transfers[command.id].state is State.RESERVED


def test_multi_leg_transfers_are_all_or_nothing() -> None:
    a, b, c = make_account(funds=100), make_account("bob"), make_account("carol")
    ledger = book(a, b, c)
    too_much = reserve(a, b, 0, legs=(Leg(a.id, b.id, 60), Leg(a.id, c.id, 41)))
    with pytest.raises(InsufficientFunds):
        ledger.reserve(too_much, ALICE)
    assert (a.available, b.credits_reserved, c.credits_reserved) == (100, 0, 0)
    fits = reserve(a, b, 0, legs=(Leg(a.id, b.id, 60), Leg(a.id, c.id, 40)))
    ledger.reserve(fits, ALICE)
    ledger.confirm(ConfirmCommand(fits.id), ALICE)
    assert (a.posted, b.posted, c.posted) == (0, 60, 40)
    assert len(ledger.entries) == 4


@pytest.mark.parametrize(
    "legs",
    [(), tuple(Leg(uuid4(), uuid4(), 1) for _ in range(17))],
)
def test_leg_count_is_bounded(legs: tuple[Leg, ...]) -> None:
    with pytest.raises(InvalidInput):
        ReserveCommand(uuid4(), "EUR", legs, 60, False, {}, {})


def test_a_leg_must_move_money_between_two_accounts() -> None:
    same = uuid4()
    with pytest.raises(InvalidInput):
        ReserveCommand(uuid4(), "EUR", (Leg(same, same, 1),), 60, False, {}, {})
