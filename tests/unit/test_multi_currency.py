"""Multi-currency transfers on an in-memory Book: the currency rules of legs, and a
foreign-exchange payment (EUR leaves the customer, USD reaches the merchant, through the
bank's EUR and USD position accounts) reserved, confirmed, cancelled, expired or refused as
one. No database."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from holdfast.domain.accounts import Account, Direction, NormalBalance
from holdfast.domain.actors import Actor
from holdfast.domain.errors import (
    AccountNotFound,
    CurrencyMismatch,
    ExistsWithDifferentFields,
    InsufficientFunds,
    InvalidInput,
    InvariantViolation,
)
from holdfast.domain.ledger import Legs
from holdfast.domain.transfers import (
    Book,
    CancelCommand,
    ConfirmCommand,
    Entry,
    Leg,
    ReserveCommand,
    State,
    check_balanced,
    common_currency,
    entry_id,
    resolve_currencies,
)
from holdfast.entrypoints.schemas import ReserveIn

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BANK = Actor("payments", frozenset({"operator"}))
ALICE = Actor("alice", frozenset({"transfers:write"}))


def account(currency: str, owner: str, *, limit: int | None = 0, funds: int = 0) -> Account:
    opened = Account(uuid4(), currency, owner, NormalBalance.CREDIT, limit, {}, T0)
    opened.credits_posted = funds
    return opened


class Fx:
    """The four accounts of a card payment settled in another currency."""

    def __init__(self, *, customer_eur: int = 50_000, position_usd: int = 100_000) -> None:
        self.customer = account("EUR", "alice", funds=customer_eur)
        self.position_eur = account("EUR", "bank", limit=None)
        self.position_usd = account("USD", "bank", funds=position_usd)
        self.merchant = account("USD", "merchant")
        self.book = Book(
            now=T0,
            accounts={a.id: a for a in self.all()},
            transfers={},
        )

    def all(self) -> list[Account]:
        return [self.customer, self.position_eur, self.position_usd, self.merchant]

    def payment(
        self, eur: int = 10_000, usd: int = 10_800, *, immediate: bool = False
    ) -> ReserveCommand:
        return ReserveCommand(
            id=uuid4(),
            currency=None,
            legs=(
                Leg(self.customer.id, self.position_eur.id, eur, "EUR"),
                Leg(self.position_usd.id, self.merchant.id, usd, "USD"),
            ),
            timeout_s=60,
            immediate=immediate,
            metadata={},
            request={"eur": eur, "usd": usd, "immediate": immediate},
        )

    def balances(self) -> list[tuple[int, int]]:
        return [(a.posted, a.available) for a in self.all()]


def per_currency_sum(accounts: list[Account]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for a in accounts:
        totals[a.currency] += a.credits_posted - a.debits_posted
    return dict(totals)


# -- the rules of a leg's currency --------------------------------------------------------


def test_a_leg_without_a_currency_inherits_the_transfers() -> None:
    legs = resolve_currencies("EUR", (Leg(uuid4(), uuid4(), 1), Leg(uuid4(), uuid4(), 2, "EUR")))
    assert [leg.currency for leg in legs] == ["EUR", "EUR"]


def test_legs_may_differ_when_the_transfer_names_no_currency() -> None:
    legs = resolve_currencies(
        None, (Leg(uuid4(), uuid4(), 1, "EUR"), Leg(uuid4(), uuid4(), 2, "USD"))
    )
    assert [leg.currency for leg in legs] == ["EUR", "USD"]
    assert common_currency(legs) is None
    assert common_currency(legs[:1]) == "EUR"
    assert common_currency(()) is None


def test_a_leg_naming_another_currency_than_the_transfer_is_a_currency_mismatch() -> None:
    with pytest.raises(CurrencyMismatch, match=r"legs\[1\] is in USD"):
        resolve_currencies("EUR", (Leg(uuid4(), uuid4(), 1), Leg(uuid4(), uuid4(), 2, "USD")))


def test_a_leg_with_no_currency_anywhere_is_invalid() -> None:
    with pytest.raises(InvalidInput, match=r"legs\[0\] has no currency"):
        resolve_currencies(None, (Leg(uuid4(), uuid4(), 1), Leg(uuid4(), uuid4(), 2, "USD")))


@pytest.mark.parametrize(("top", "leg"), [("EURO", None), (None, "usd"), (None, "ABC")])
def test_currencies_are_iso_4217_codes(top: str | None, leg: str | None) -> None:
    with pytest.raises(InvalidInput):
        ReserveCommand(uuid4(), top, (Leg(uuid4(), uuid4(), 1, leg),), 60, False, {}, {})


def test_the_command_holds_only_resolved_legs() -> None:
    command = ReserveCommand(uuid4(), "CHF", (Leg(uuid4(), uuid4(), 1),), 60, False, {}, {})
    assert command.legs[0].currency == "CHF"


def test_the_request_model_needs_a_currency_somewhere() -> None:
    a, b = str(uuid4()), str(uuid4())
    base = {
        "id": str(uuid4()),
        "legs": [{"debit_account_id": a, "credit_account_id": b, "amount": 1}],
    }
    with pytest.raises(ValidationError, match="give currency, or a currency on every leg"):
        ReserveIn.model_validate(base)
    single = {"id": str(uuid4()), "debit_account_id": a, "credit_account_id": b, "amount": 1}
    with pytest.raises(ValidationError):
        ReserveIn.model_validate(single)
    with pytest.raises(ValidationError):
        ReserveIn.model_validate({**base, "legs": [{**base["legs"][0], "currency": "EURO"}]})  # type: ignore[index]
    own = ReserveIn.model_validate({**base, "legs": [{**base["legs"][0], "currency": "USD"}]})  # type: ignore[index]
    assert own.command().legs[0].currency == "USD"


def test_a_leg_without_currency_fingerprints_as_before() -> None:
    """Requests stored before v1.1 had no leg currency: a replay of one must compare equal."""
    a, b = str(uuid4()), str(uuid4())
    leg = {"debit_account_id": a, "credit_account_id": b, "amount": 1}
    request = ReserveIn.model_validate({"id": str(uuid4()), "currency": "EUR", "legs": [leg]})
    assert request.fingerprint()["legs"] == [leg]


# -- a foreign-exchange payment -------------------------------------------------------------


def test_reserve_holds_each_currency_and_confirm_posts_each_leg_in_its_own() -> None:
    fx = Fx()
    command = fx.payment()
    answer = fx.book.reserve(command, BANK)
    assert answer.transfer.currency is None
    assert [(leg.amount, leg.currency) for leg in answer.transfer.legs] == [
        (10_000, "EUR"),
        (10_800, "USD"),
    ]
    assert fx.balances() == [(50_000, 40_000), (0, 0), (100_000, 89_200), (0, 0)]
    assert fx.book.entries == []
    fx.book.confirm(ConfirmCommand(command.id), BANK)
    assert fx.balances() == [(40_000, 40_000), (10_000, 10_000), (89_200, 89_200), (10_800, 10_800)]
    assert [(e.leg, e.direction.value, e.amount, e.currency) for e in fx.book.entries] == [
        (0, "debit", 10_000, "EUR"),
        (0, "credit", 10_000, "EUR"),
        (1, "debit", 10_800, "USD"),
        (1, "credit", 10_800, "USD"),
    ]
    assert per_currency_sum(fx.all()) == {"EUR": 50_000, "USD": 100_000}  # only the funding
    assert [e.kind for e in fx.book.events] == ["reserved", "confirmed"]
    # The same confirm again is a replay; a partial confirm is for single-leg transfers only.
    assert fx.book.confirm(ConfirmCommand(command.id), BANK).transfer.state is State.CONFIRMED
    with pytest.raises(InvalidInput):
        fx.book.confirm(ConfirmCommand(command.id, 1), BANK)


def test_cancel_releases_every_currency() -> None:
    fx = Fx()
    command = fx.payment()
    fx.book.reserve(command, BANK)
    answer = fx.book.cancel(CancelCommand(command.id), BANK)
    assert answer.transfer.state is State.CANCELLED
    assert fx.balances() == [(50_000, 50_000), (0, 0), (100_000, 100_000), (0, 0)]
    assert all(a.debits_reserved == a.credits_reserved == 0 for a in fx.all())


def test_expiry_releases_every_currency() -> None:
    fx = Fx()
    command = fx.payment()
    fx.book.reserve(command, BANK)
    later = Book(T0 + timedelta(seconds=60), fx.book.accounts, fx.book.transfers)
    # What the repository reads at that instant: every hold of the transfer has lapsed.
    fx.customer.debits_lapsed, fx.position_eur.credits_lapsed = 10_000, 10_000
    fx.position_usd.debits_lapsed, fx.merchant.credits_lapsed = 10_800, 10_800
    assert fx.balances() == [(50_000, 50_000), (0, 0), (100_000, 100_000), (0, 0)]
    later.expire(command.id)
    assert later.transfers[command.id].state is State.EXPIRED
    assert fx.balances() == [(50_000, 50_000), (0, 0), (100_000, 100_000), (0, 0)]
    assert [e.kind for e in later.events] == ["expired"]


def test_an_overdraft_in_one_currency_refuses_every_leg() -> None:
    fx = Fx(position_usd=10_000)  # the bank is 800 short of the dollars
    before = fx.balances()
    with pytest.raises(InsufficientFunds):
        fx.book.reserve(fx.payment(), BANK)
    with pytest.raises(InsufficientFunds):
        fx.book.reserve(fx.payment(immediate=True), BANK)
    assert fx.balances() == before
    assert fx.book.transfers == {} and fx.book.entries == [] and fx.book.events == []
    assert fx.book.changed_accounts == set()


def test_an_account_in_another_currency_than_its_leg_is_a_mismatch() -> None:
    fx = Fx()
    command = ReserveCommand(
        uuid4(),
        None,
        (
            Leg(fx.customer.id, fx.position_eur.id, 100, "EUR"),
            Leg(fx.position_usd.id, fx.merchant.id, 100, "EUR"),  # USD accounts
        ),
        60,
        False,
        {},
        {},
    )
    with pytest.raises(CurrencyMismatch, match=r"holds USD, not EUR \(legs\[1\]\)"):
        fx.book.reserve(command, BANK)
    assert fx.book.transfers == {} and fx.customer.available == 50_000


def test_a_replay_compares_the_currencies_too() -> None:
    fx = Fx()
    body = {
        "id": str(uuid4()),
        "legs": [
            {
                "debit_account_id": str(fx.customer.id),
                "credit_account_id": str(fx.position_eur.id),
                "amount": 10_000,
                "currency": "EUR",
            },
            {
                "debit_account_id": str(fx.position_usd.id),
                "credit_account_id": str(fx.merchant.id),
                "amount": 10_800,
                "currency": "USD",
            },
        ],
    }
    first = fx.book.reserve(ReserveIn.model_validate(body).command(), BANK)
    again = fx.book.reserve(ReserveIn.model_validate(body).command(), BANK)
    assert again.transfer == first.transfer
    legs = body["legs"]
    assert isinstance(legs, list)
    other = {**body, "legs": [legs[0], {**legs[1], "currency": "CAD"}]}
    with pytest.raises(ExistsWithDifferentFields) as error:
        fx.book.reserve(ReserveIn.model_validate(other).command(), BANK)
    assert error.value.fields == ["legs"]
    # Spelling the inherited currency out is a different request too: compared as sent.
    spelled = {**body, "currency": "EUR", "legs": [legs[0]]}
    with pytest.raises(ExistsWithDifferentFields) as error:
        fx.book.reserve(ReserveIn.model_validate(spelled).command(), BANK)
    assert error.value.fields == ["currency", "legs"]
    assert fx.balances() == [(50_000, 40_000), (0, 0), (100_000, 89_200), (0, 0)]


def test_a_customer_cannot_debit_the_banks_position() -> None:
    """Only the bank (operator) settles through its position accounts."""
    fx = Fx()
    with pytest.raises(AccountNotFound):
        fx.book.reserve(fx.payment(), ALICE)
    assert fx.customer.available == 50_000


# -- double entry per leg and currency ---------------------------------------------------


def entry(transfer: UUID, leg: int, direction: Direction, amount: int, currency: str) -> Entry:
    return Entry(
        entry_id(transfer, leg, direction), transfer, leg, direction, uuid4(), amount, currency, T0
    )


def test_check_balanced_never_nets_one_currency_against_another() -> None:
    t = uuid4()
    check_balanced(
        [
            entry(t, 0, Direction.DEBIT, 100, "EUR"),
            entry(t, 0, Direction.CREDIT, 100, "EUR"),
            entry(t, 1, Direction.DEBIT, 108, "USD"),
            entry(t, 1, Direction.CREDIT, 108, "USD"),
        ]
    )
    with pytest.raises(InvariantViolation):
        check_balanced(
            [
                entry(t, 0, Direction.DEBIT, 100, "EUR"),
                entry(t, 0, Direction.CREDIT, 100, "USD"),
                entry(t, 1, Direction.DEBIT, 100, "USD"),
                entry(t, 1, Direction.CREDIT, 100, "EUR"),
            ]
        )


def _record(
    transfer: str, leg: int, direction: str, amount: int, currency: str
) -> dict[str, object]:
    return {
        "transfer_id": transfer,
        "leg": leg,
        "direction": direction,
        "account_id": str(uuid4()),
        "amount": amount,
        "currency": currency,
    }


def test_the_verifier_takes_legs_in_different_currencies_but_not_a_mixed_leg() -> None:
    fx, mixed = str(uuid4()), str(uuid4())
    legs = Legs()
    for record in (
        _record(fx, 0, "debit", 10_000, "EUR"),
        _record(fx, 0, "credit", 10_000, "EUR"),
        _record(fx, 1, "debit", 10_800, "USD"),
        _record(fx, 1, "credit", 10_800, "USD"),
    ):
        assert legs.add(record, "line") is None
    assert legs.problem() is None
    legs.clear()
    legs.add(_record(mixed, 0, "debit", 10_000, "EUR"), "line 7")
    legs.add(_record(mixed, 0, "credit", 10_000, "USD"), "line 8")
    problem = legs.problem()
    assert problem is not None and problem[0] == "line 7"
    assert "does not balance" in problem[1] and "EUR" in problem[1] and "USD" in problem[1]


# -- a property: whatever the legs, every currency balances on its own ---------------------

CURRENCIES = ["EUR", "USD", "JPY"]


@settings(max_examples=200, deadline=None)
@given(
    legs=st.lists(
        st.tuples(
            st.sampled_from(CURRENCIES),
            st.integers(0, 2),
            st.integers(0, 2),
            st.integers(1, 10_000),
        ).filter(lambda x: x[1] != x[2]),
        min_size=1,
        max_size=16,
    ),
    confirm=st.booleans(),
)
def test_any_multi_currency_transfer_balances_per_currency(
    legs: list[tuple[str, int, int, int]], confirm: bool
) -> None:
    accounts = {c: [account(c, "bank", limit=None) for _ in range(3)] for c in CURRENCIES}
    ledger = Book(T0, {a.id: a for group in accounts.values() for a in group}, {})
    command = ReserveCommand(
        uuid4(),
        None,
        tuple(Leg(accounts[c][d].id, accounts[c][k].id, n, c) for c, d, k, n in legs),
        60,
        False,
        {},
        {},
    )
    transfer = ledger.reserve(command, BANK).transfer
    used = {c for c, *_ in legs}
    assert transfer.currency == (used.pop() if len(used) == 1 else None)
    if confirm:
        ledger.confirm(ConfirmCommand(command.id), BANK)
    else:
        ledger.cancel(CancelCommand(command.id), BANK)
    every = [a for group in accounts.values() for a in group]
    assert all(total == 0 for total in per_currency_sum(every).values())
    assert all(a.debits_reserved == a.credits_reserved == 0 for a in every)
    moved: dict[str, int] = defaultdict(int)
    for e in ledger.entries:
        moved[e.currency] += e.amount if e.direction is Direction.DEBIT else -e.amount
    assert all(v == 0 for v in moved.values())
    expected = {c: sum(n for cc, *_, n in legs if cc == c) for c in CURRENCIES} if confirm else {}
    posted_debits = {c: sum(a.debits_posted for a in accounts[c]) for c in CURRENCIES}
    assert posted_debits == (expected or dict.fromkeys(CURRENCIES, 0))
