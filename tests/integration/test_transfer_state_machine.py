"""Property-based stateful test: random TCC sequences against a simple reference model.

Hypothesis drives reserve / confirm / cancel / expiry / sweep / replay on the real database
and a plain-Python model side by side. After every step: the database agrees with the model,
per currency the posted balances sum to zero, no account breaks its limit, every confirmed
transfer has balanced entries and no hold outlives its transfer. The same machine runs again
with serialization failures injected into a share of the transactions.

Accounts hold EUR or USD, and a transfer's legs may mix them (each leg within one
currency): a multi-currency transfer names its currency on every leg and none on the
transfer; a single-currency one sometimes names it once on the transfer, for its legs to
inherit. A leg whose accounts hold two currencies is refused and changes nothing.

Expiry without waiting: a rule moves one reservation's `expires_at` into the past (the test's
stand-in for the clock passing it), then the model treats it as lapsed.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from holdfast import bootstrap
from holdfast.adapters.database import Database
from holdfast.config import Settings
from holdfast.domain.accounts import NormalBalance, OpenAccount
from holdfast.domain.actors import Actor
from holdfast.domain.transfers import CancelCommand, ConfirmCommand, Leg, ReserveCommand
from holdfast.services import accounts, transfers
from holdfast.services.transfers import Operation
from tests.conftest import TEMPLATE, scratch_database
from tests.integration.helpers import check_invariants

OPS = Actor("ops", frozenset({"operator"}))
LIMITS = [0, 0, 50, None, 0, None]
CURRENCIES = ["EUR", "EUR", "EUR", "EUR", "USD", "USD"]
# Every (debit, credit) pair a leg may use: two different accounts of one currency.
PAIRS = [
    (d, c)
    for d in range(len(LIMITS))
    for c in range(len(LIMITS))
    if d != c and CURRENCIES[d] == CURRENCIES[c]
]
MIXED = [
    (d, c) for d in range(len(LIMITS)) for c in range(len(LIMITS)) if CURRENCIES[d] != CURRENCIES[c]
]


@dataclass
class ModelTransfer:
    legs: list[tuple[int, int, int]]  # (debit index, credit index, amount)
    state: str  # reserved, confirmed, cancelled, expired, fenced
    lapsed: bool = False
    confirmed: int = 0


@dataclass
class Model:
    posted: list[int] = field(default_factory=lambda: [0] * len(LIMITS))
    transfers: dict[uuid.UUID, ModelTransfer] = field(default_factory=dict)

    def held(self, index: int) -> int:
        return sum(
            amount
            for t in self.transfers.values()
            if t.state == "reserved" and not t.lapsed
            for debit, _, amount in t.legs
            if debit == index
        )

    def available(self, index: int) -> int:
        return self.posted[index] - self.held(index)

    def fits(self, legs: list[tuple[int, int, int]]) -> bool:
        need: dict[int, int] = {}
        for debit, _, amount in legs:
            need[debit] = need.get(debit, 0) + amount
        return all(
            LIMITS[d] is None or self.available(d) - n >= -(LIMITS[d] or 0) for d, n in need.items()
        )


class TransferMachine(RuleBasedStateMachine):
    database_factory: object = None
    fault_rate = 0.0
    ids = Bundle("transfer_ids")

    def __init__(self) -> None:
        super().__init__()
        self.db: Database = self.database_factory(self.fault_rate)  # type: ignore[operator]
        self.model = Model()
        self.accounts: list[uuid.UUID] = []
        self.last_reserve: dict[uuid.UUID, ReserveCommand] = {}

    def teardown(self) -> None:
        self.db.dispose()

    @initialize()
    def open_and_fund(self) -> None:
        banks = {}
        for currency in sorted(set(CURRENCIES)):
            banks[currency] = uuid.uuid4()
            accounts.open_account(
                self.db,
                OpenAccount(banks[currency], currency, "bank", NormalBalance.CREDIT, None, {}),
                OPS,
            )
        for index, limit in enumerate(LIMITS):
            account, currency = uuid.uuid4(), CURRENCIES[index]
            accounts.open_account(
                self.db, OpenAccount(account, currency, "c", NormalBalance.CREDIT, limit, {}), OPS
            )
            self.accounts.append(account)
            if limit is not None:
                funding = ReserveCommand(
                    uuid.uuid4(),
                    currency,
                    (Leg(banks[currency], account, 300),),
                    60,
                    True,
                    {},
                    {"f": 1},
                )
                assert self.execute(funding).error is None
                self.model.posted[index] += 300

    def execute(self, command: object) -> transfers.Outcome:
        return transfers.execute(self.db, [Operation(command, OPS)])[0]  # type: ignore[arg-type]

    def command(
        self,
        id_: uuid.UUID,
        legs: list[tuple[int, int, int]],
        immediate: bool,
        inherit: bool = False,
    ) -> ReserveCommand:
        """Each leg in its debit account's currency: named once on the transfer (`inherit`,
        when the legs share one), else on every leg."""
        currencies = {CURRENCIES[d] for d, _, _ in legs}
        top = currencies.pop() if inherit and len(currencies) == 1 else None
        return ReserveCommand(
            id_,
            top,
            tuple(
                Leg(self.accounts[d], self.accounts[c], a, None if top else CURRENCIES[d])
                for d, c, a in legs
            ),
            600,
            immediate,
            {},
            {"legs": [list(x) for x in legs], "immediate": immediate, "inherit": bool(top)},
        )

    @rule(
        target=ids,
        legs=st.lists(
            st.tuples(st.sampled_from(PAIRS), st.integers(1, 200)).map(lambda x: (*x[0], x[1])),
            min_size=1,
            max_size=3,
        ),
        immediate=st.booleans(),
        inherit=st.booleans(),
    )
    def reserve(
        self, legs: list[tuple[int, int, int]], immediate: bool, inherit: bool
    ) -> uuid.UUID:
        id_ = uuid.uuid4()
        command = self.command(id_, legs, immediate, inherit)
        outcome = self.execute(command)
        if outcome.answer is not None:
            currencies = {CURRENCIES[d] for d, _, _ in legs}
            assert outcome.answer.transfer.currency == (
                next(iter(currencies)) if len(currencies) == 1 else None
            )
            assert [leg.currency for leg in outcome.answer.transfer.legs] == [
                CURRENCIES[d] for d, _, _ in legs
            ]
        if self.model.fits(legs):
            assert outcome.error is None, outcome.error
            self.model.transfers[id_] = ModelTransfer(
                legs, "confirmed" if immediate else "reserved"
            )
            if immediate:
                self.post(self.model.transfers[id_], sum(a for *_, a in legs))
            self.last_reserve[id_] = command
        else:
            assert outcome.error is not None and outcome.error.code == "insufficient_funds"
        return id_

    def post(self, transfer: ModelTransfer, amount: int) -> None:
        legs = (
            transfer.legs
            if amount == sum(a for *_, a in transfer.legs)
            else [(transfer.legs[0][0], transfer.legs[0][1], amount)]
        )
        for debit, credit, a in legs:
            self.model.posted[debit] -= a
            self.model.posted[credit] += a
        transfer.confirmed = amount

    @rule(id_=ids, partial=st.integers(1, 200) | st.none())
    def confirm(self, id_: uuid.UUID, partial: int | None) -> None:
        outcome = self.execute(ConfirmCommand(id_, partial))
        t = self.model.transfers.get(id_)
        if t is None:
            assert outcome.error is not None and outcome.error.code == "transfer_not_found"
            return
        total = sum(a for *_, a in t.legs)
        code = outcome.error.code if outcome.error else None
        if t.state == "fenced":
            assert code == "transfer_cancelled"
        elif partial is not None and len(t.legs) > 1:
            assert code == "validation_error"
        elif partial is not None and partial > total:
            assert code == "amount_exceeds_reserved"
        elif t.state == "cancelled":
            assert code == "transfer_cancelled"
        elif t.state == "expired" or (t.state == "reserved" and t.lapsed):
            t.state = "expired"
            assert code == "transfer_expired"
        elif t.state == "confirmed":
            assert code == (
                None if (partial or total) == t.confirmed else "exists_with_different_fields"
            )
        else:
            assert code is None
            t.state = "confirmed"
            self.post(t, partial or total)

    @rule(id_=ids)
    def cancel(self, id_: uuid.UUID) -> None:
        outcome = self.execute(CancelCommand(id_))
        t = self.model.transfers.get(id_)
        if t is None:
            assert outcome.error is None
            self.model.transfers[id_] = ModelTransfer([], "fenced")
        elif t.state == "confirmed":
            assert outcome.error is not None and outcome.error.code == "transfer_confirmed"
        else:
            assert outcome.error is None
            if t.state == "reserved":
                t.state = "expired" if t.lapsed else "cancelled"

    @rule(target=ids)
    def cancel_unknown(self) -> uuid.UUID:
        id_ = uuid.uuid4()
        self.cancel(id_)
        return id_

    @rule(pair=st.sampled_from(MIXED), other=st.sampled_from(PAIRS), amount=st.integers(1, 200))
    def reserve_a_leg_across_currencies(
        self, pair: tuple[int, int], other: tuple[int, int], amount: int
    ) -> None:
        """One leg's accounts hold two currencies: the whole transfer is refused."""
        legs = [(*other, amount), (*pair, amount)]
        outcome = self.execute(self.command(uuid.uuid4(), legs, False))
        assert outcome.error is not None and outcome.error.code == "currency_mismatch"

    @rule(id_=ids)
    def replay_reserve(self, id_: uuid.UUID) -> None:
        command = self.last_reserve.get(id_)
        t = self.model.transfers.get(id_)
        if command is None or t is None:
            return
        outcome = self.execute(command)
        assert outcome.error is None and outcome.answer is not None
        assert outcome.answer.transfer.state.value == (
            "confirmed" if command.immediate else "reserved"
        )

    @rule(id_=ids)
    def reserve_after_fence(self, id_: uuid.UUID) -> None:
        t = self.model.transfers.get(id_)
        if t is None or t.state != "fenced":
            return
        outcome = self.execute(self.command(id_, [(0, 1, 1)], False))
        assert outcome.error is not None and outcome.error.code == "transfer_cancelled"

    @rule(id_=ids)
    def lapse(self, id_: uuid.UUID) -> None:
        t = self.model.transfers.get(id_)
        if t is None or t.state != "reserved":
            return
        with self.db.engine.begin() as c:
            for table in ("transfers", "holds"):
                c.execute(
                    sa.text(
                        f"UPDATE {table} SET expires_at = now() - interval '1 millisecond' "
                        f"WHERE {'id' if table == 'transfers' else 'transfer_id'} = :i"
                    ),
                    {"i": id_},
                )
        t.lapsed = True

    @rule()
    def sweep(self) -> None:
        expected = sum(
            1 for t in self.model.transfers.values() if t.state == "reserved" and t.lapsed
        )
        swept = transfers.sweep_expired(self.db, batch_max=1000)
        assert swept == expected
        for t in self.model.transfers.values():
            if t.state == "reserved" and t.lapsed:
                t.state = "expired"

    @invariant()
    def database_agrees_with_the_model(self) -> None:
        if not self.accounts:
            return
        for index, account_id in enumerate(self.accounts):
            account = accounts.get_account(self.db, account_id, OPS)
            assert account.posted == self.model.posted[index]
            assert account.available == self.model.available(index)
        check_invariants(self.db)


@pytest.fixture
def database_factory(
    server_url: str, template_url: str, settings: Settings
) -> Iterator[Callable[[float], Database]]:
    """Each hypothesis example gets a fresh migrated database (all dropped at the end), built
    by the composition root with the test's keys and the machine's own fault rate."""
    with contextlib.ExitStack() as stack:

        def make(fault_rate: float) -> Database:
            url = stack.enter_context(scratch_database(server_url, "sm_", template=TEMPLATE))
            configured = replace(
                settings, database_url=url, fault_serialization_rate=fault_rate, fault_seed=1
            )
            return bootstrap.database(
                configured,
                application_name="state-machine",
                cipher=bootstrap.metadata_cipher(settings),
                pool_size=2,
            )

        yield make


SETTINGS = hypothesis_settings(
    max_examples=20,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_random_tcc_sequences_keep_every_invariant(database_factory: object) -> None:
    machine = type(
        "Machine", (TransferMachine,), {"database_factory": staticmethod(database_factory)}
    )
    run_state_machine_as_test(machine, settings=SETTINGS)


def test_the_same_with_serialization_failures_injected(database_factory: object) -> None:
    machine = type(
        "FaultyMachine",
        (TransferMachine,),
        {"database_factory": staticmethod(database_factory), "fault_rate": 0.3},
    )
    run_state_machine_as_test(machine, settings=SETTINGS)
