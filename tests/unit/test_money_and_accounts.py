"""Money rules and account balances, without a database."""

from datetime import UTC, datetime
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from holdfast import limits
from holdfast.domain.accounts import Account, Direction, NormalBalance, Status
from holdfast.domain.errors import (
    AccountNotEmpty,
    AccountNotOpen,
    InsufficientFunds,
    InvalidInput,
    InvariantViolation,
)
from holdfast.domain.money import check_amount, check_currency

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def account(normal: NormalBalance = NormalBalance.CREDIT, limit: int | None = 0) -> Account:
    return Account(uuid4(), "EUR", "alice", normal, limit, {}, NOW)


@pytest.mark.parametrize("bad", [0, -1, 1.0, 1.5, "1", True, False, None, 2**53, [1]])
def test_check_amount_rejects_everything_but_positive_safe_integers(bad: object) -> None:
    with pytest.raises(InvalidInput):
        check_amount(bad)


@given(st.integers(limits.amount_minor_min, limits.amount_minor_max))
def test_check_amount_accepts_the_whole_range(amount: int) -> None:
    assert check_amount(amount) == amount


@pytest.mark.parametrize("bad", ["eur", "EURO", "ABC", "", 978, None])
def test_check_currency_rejects_non_iso_codes(bad: object) -> None:
    with pytest.raises(InvalidInput):
        check_currency(bad)


def test_credit_normal_balance_formulas() -> None:
    a = account()
    a.post(Direction.CREDIT, 1000)
    a.post(Direction.DEBIT, 300)
    a.hold(Direction.DEBIT, 200)
    a.hold(Direction.CREDIT, 50)  # incoming money is not available yet
    assert (a.posted, a.available) == (700, 500)


def test_debit_normal_balance_is_the_mirror_image() -> None:
    a = account(NormalBalance.DEBIT)
    a.post(Direction.DEBIT, 1000)
    a.post(Direction.CREDIT, 300)
    a.hold(Direction.CREDIT, 200)
    a.hold(Direction.DEBIT, 50)
    assert (a.posted, a.available) == (700, 500)
    assert a.lowers_available(Direction.CREDIT)
    assert not a.lowers_available(Direction.DEBIT)


def test_lapsed_holds_count_as_released() -> None:
    a = account()
    a.post(Direction.CREDIT, 100)
    a.hold(Direction.DEBIT, 100)
    a.debits_lapsed = 100
    assert a.available == 100
    assert a.effective_debits_reserved == 0


def test_overdraft_limit_is_the_floor_of_available() -> None:
    a = account(limit=50)
    a.hold(Direction.DEBIT, 50)
    a.check_limit()
    a.hold(Direction.DEBIT, 1)
    with pytest.raises(InsufficientFunds):
        a.check_limit()


def test_unlimited_account_never_runs_out() -> None:
    a = account(limit=None)
    a.hold(Direction.DEBIT, limits.amount_minor_max)
    a.check_limit()


def test_releasing_more_than_held_is_an_invariant_violation() -> None:
    a = account()
    a.hold(Direction.DEBIT, 10)
    with pytest.raises(InvariantViolation):
        a.release(Direction.DEBIT, 11, lapsed=False)


def test_counters_cannot_overflow_64_bits() -> None:
    a = account(limit=None)
    a.debits_posted = limits.balance_minor_abs_max - 1
    with pytest.raises(InvalidInput):
        a.post(Direction.DEBIT, 2)


def test_status_transitions() -> None:
    a = account()
    assert a.freeze() is True
    assert a.freeze() is False
    with pytest.raises(AccountNotOpen):
        a.require_open()
    assert a.unfreeze() is True
    assert a.close() is True
    assert a.status is Status.CLOSED
    assert a.close() is False
    with pytest.raises(AccountNotOpen):
        a.freeze()
    with pytest.raises(AccountNotOpen):
        a.unfreeze()


@pytest.mark.parametrize(
    ("direction", "posted", "held"),
    [(Direction.CREDIT, 1, 0), (Direction.DEBIT, 0, 1)],
)
def test_close_needs_zero_balance_and_no_reservations(
    direction: Direction, posted: int, held: int
) -> None:
    a = account(limit=None)
    if posted:
        a.post(direction, posted)
    if held:
        a.hold(direction, held)
    with pytest.raises(AccountNotEmpty):
        a.close()
    assert a.status is Status.OPEN
