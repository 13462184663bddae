"""Transfers: the TCC state machine (reserve / confirm / cancel) and its money rules.

State machine (a transfer id, from the first operation that names it):

                 reserve                    confirm
    (unknown) ───────────▶ reserved ──────────────────▶ confirmed
        │                    │  │
        │ cancel             │  │ cancel                   expires_at passes
        ▼                    │  └─────────▶ cancelled      (read as expired at once,
    cancelled (fenced)       └────────────▶ expired         written by confirm, cancel
        │                                                   or the sweep)
        └─ reserve: 409 transfer_cancelled (never a hold nobody will release)

    (unknown) ── reserve immediate ──▶ confirmed

Hazards handled by design: a duplicate call replays the first answer; a cancel before any
reserve fences the id (empty cancel); a reserve after that cancel is refused (suspension).

Currencies: every leg carries its own currency (a leg given without one inherits the
transfer's), and both of its accounts must hold that currency. The legs of one transfer may
use several currencies (a foreign-exchange payment through the bank's position accounts):
each leg is still one debit and one credit of the same amount, so every currency balances on
its own, and all legs are reserved, confirmed, cancelled or expired together. A transfer's
`currency` is the one its legs share, or None when they use more than one.

Invariants kept by `Book`:
- a hold exists exactly while its transfer is reserved (lapsed holds count as released for
  every read and every rule, from `expires_at` on);
- confirm posts one debit and one credit entry of the same amount and currency per leg;
- rules about balance, status and currency are checked at reserve time, so a confirm or a
  cancel can never break them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal
from uuid import NAMESPACE_URL, UUID, uuid5

from holdfast import limits
from holdfast.domain.accounts import Account, Direction, differing_fields
from holdfast.domain.actors import Actor
from holdfast.domain.errors import (
    AccountNotFound,
    AmountExceedsReserved,
    CurrencyMismatch,
    ExistsWithDifferentFields,
    InvalidInput,
    InvariantViolation,
    TransferCancelled,
    TransferConfirmed,
    TransferExpired,
    TransferNotFound,
    require,
)
from holdfast.domain.money import check_amount, check_currency

ENTRY_NAMESPACE = uuid5(NAMESPACE_URL, "https://holdfast.dev/ledger/entry")


class State(StrEnum):
    RESERVED = "reserved"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Leg:
    debit_account_id: UUID
    credit_account_id: UUID
    amount: int
    # None only in a request, meaning "the transfer's currency": `ReserveCommand` resolves
    # it, so every leg of a `Transfer` carries its currency.
    currency: str | None = None

    def in_currency(self) -> str:
        if self.currency is None:
            raise InvariantViolation("a leg of a transfer carries its currency")
        return self.currency


def resolve_currencies(currency: str | None, legs: tuple[Leg, ...]) -> tuple[Leg, ...]:
    """The legs, each with its currency: its own, else the transfer's.

    A leg naming a currency other than the transfer's is refused (`currency_mismatch`): the
    request contradicts itself, and guessing which one was meant would move the wrong money.
    """
    if currency is not None:
        check_currency(currency)
    resolved = []
    for index, leg in enumerate(legs):
        if leg.currency is None:
            if currency is None:
                raise InvalidInput(
                    f"legs[{index}] has no currency: give the transfer's currency or each leg's"
                )
            resolved.append(replace(leg, currency=currency))
            continue
        check_currency(leg.currency)
        if currency is not None and leg.currency != currency:
            raise CurrencyMismatch(
                f"legs[{index}] is in {leg.currency} but the transfer is in {currency}: "
                "omit the transfer's currency for a multi-currency transfer"
            )
        resolved.append(leg)
    return tuple(resolved)


def common_currency(legs: tuple[Leg, ...]) -> str | None:
    """The currency every leg shares; None when they use several (or there are none)."""
    currencies = {leg.currency for leg in legs}
    return currencies.pop() if len(currencies) == 1 else None


@dataclass(frozen=True, slots=True)
class ReserveCommand:
    id: UUID
    currency: str | None  # the transfer's; None when every leg names its own
    legs: tuple[Leg, ...]  # resolved on construction: each carries its currency
    timeout_s: int
    immediate: bool
    metadata: dict[str, Any]
    request: dict[str, Any]  # the request as the client sent it, defaults applied

    def __post_init__(self) -> None:
        if not 1 <= len(self.legs) <= limits.transfer_legs_max:
            raise InvalidInput(f"a transfer has 1 to {limits.transfer_legs_max} legs")
        for leg in self.legs:
            check_amount(leg.amount)
            if leg.debit_account_id == leg.credit_account_id:
                raise InvalidInput("a leg must debit and credit two different accounts")
        # A frozen dataclass sets its own field once, here, so no command holds an
        # unresolved leg.
        object.__setattr__(self, "legs", resolve_currencies(self.currency, self.legs))
        if (
            not limits.reservation_timeout_s_min
            <= self.timeout_s
            <= limits.reservation_timeout_s_max
        ):
            raise InvalidInput("timeout_s is out of range")


@dataclass(frozen=True, slots=True)
class ConfirmCommand:
    id: UUID
    amount: int | None = None


@dataclass(frozen=True, slots=True)
class CancelCommand:
    id: UUID


Command = ReserveCommand | ConfirmCommand | CancelCommand


@dataclass(slots=True)
class Transfer:
    id: UUID
    state: State
    currency: str | None
    legs: tuple[Leg, ...]
    timeout_s: int | None
    immediate: bool
    metadata: dict[str, Any]
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    request: dict[str, Any] | None
    confirmed_amount: int | None = None
    resolved_at: datetime | None = None

    @property
    def fenced(self) -> bool:
        """Cancelled before it was ever reserved: the id is spent."""
        return not self.legs

    @property
    def amount(self) -> int:
        """The sum of the legs' amounts: money only when `currency` is set (one currency)."""
        return sum(leg.amount for leg in self.legs)

    def effective_state(self, now: datetime) -> State:
        if self.state is State.RESERVED and self.lapsed(now):
            return State.EXPIRED
        return self.state

    def lapsed(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def as_reserved(self) -> Transfer:
        """This transfer as the first reserve answered it (what a replay returns)."""
        first = copy.copy(self)
        if not self.immediate:
            first.state = State.RESERVED
            first.confirmed_amount = None
            first.resolved_at = None
        return first

    def debit_account_ids(self) -> set[UUID]:
        return {leg.debit_account_id for leg in self.legs}

    def account_ids(self) -> set[UUID]:
        return {a for leg in self.legs for a in (leg.debit_account_id, leg.credit_account_id)}


@dataclass(frozen=True, slots=True)
class Entry:
    """One side of one leg of a confirmed transfer: the ledger's atom, never changed."""

    id: UUID
    transfer_id: UUID
    leg: int
    direction: Direction
    account_id: UUID
    amount: int
    currency: str
    posted_at: datetime


@dataclass(frozen=True, slots=True)
class TransferEvent:
    kind: Literal["reserved", "confirmed", "cancelled", "expired"]
    transfer: Transfer


@dataclass(frozen=True, slots=True)
class Answer:
    """What one operation answers: the transfer as that operation left it."""

    operation: Literal["reserve", "confirm", "cancel"]
    transfer: Transfer


@dataclass
class Book:
    """The accounts and transfers one transaction touches, and the rules that move money.

    The service loads the rows (accounts locked in id order), applies commands one after the
    other, then writes what changed. A command that is rejected changes nothing, except that
    a transfer found lapsed is expired on the way (that change is correct whatever follows).
    """

    now: datetime
    accounts: dict[UUID, Account]
    transfers: dict[UUID, Transfer]
    new_transfers: set[UUID] = field(default_factory=set)
    changed_transfers: set[UUID] = field(default_factory=set)
    changed_accounts: set[UUID] = field(default_factory=set)
    new_holds: list[UUID] = field(default_factory=list)
    released_holds: list[UUID] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    events: list[TransferEvent] = field(default_factory=list)

    # -- operations ---------------------------------------------------------------------

    def apply(self, command: Command, actor: Actor) -> Answer:
        if isinstance(command, ReserveCommand):
            return self.reserve(command, actor)
        if isinstance(command, ConfirmCommand):
            return self.confirm(command, actor)
        return self.cancel(command, actor)

    def reserve(self, command: ReserveCommand, actor: Actor) -> Answer:
        existing = self.transfers.get(command.id)
        if existing is not None:
            return self._replay_reserve(existing, command, actor)
        accounts = self._accounts_for(command, actor)
        deltas = _deltas(command.legs)
        self._check_reservable(accounts, deltas, command.legs)
        transfer = Transfer(
            id=command.id,
            state=State.CONFIRMED if command.immediate else State.RESERVED,
            currency=common_currency(command.legs),
            legs=command.legs,
            timeout_s=command.timeout_s,
            immediate=command.immediate,
            metadata=command.metadata,
            created_by=actor.sub,
            created_at=self.now,
            expires_at=None
            if command.immediate
            else self.now + timedelta(seconds=command.timeout_s),
            request=command.request,
        )
        for (account_id, direction), amount in deltas.items():
            account = accounts[account_id]
            if command.immediate:
                account.post(direction, amount)
            else:
                account.hold(direction, amount)
            self.changed_accounts.add(account_id)
        if command.immediate:
            transfer.confirmed_amount = transfer.amount
            transfer.resolved_at = self.now
            self._post_entries(transfer, transfer.legs)
            self.events.append(TransferEvent("confirmed", copy.copy(transfer)))
        else:
            self.new_holds.append(transfer.id)
            self.events.append(TransferEvent("reserved", copy.copy(transfer)))
        self.transfers[transfer.id] = transfer
        self.new_transfers.add(transfer.id)
        for account_id, direction in deltas:
            account = accounts[account_id]
            require(
                not account.lowers_available(direction)
                or account.overdraft_limit is None
                or account.available >= -account.overdraft_limit,
                f"account {account_id} broke its limit after a checked reservation",
            )
        return Answer("reserve", transfer.as_reserved())

    def confirm(self, command: ConfirmCommand, actor: Actor) -> Answer:
        transfer = self._visible_transfer(command.id, actor)
        if transfer.fenced:
            raise TransferCancelled(f"transfer {transfer.id} was cancelled")
        if command.amount is not None:
            check_amount(command.amount)
            if len(transfer.legs) > 1:
                raise InvalidInput("a partial confirm (amount) is for single-leg transfers only")
            if command.amount > transfer.amount:
                raise AmountExceedsReserved(
                    f"amount {command.amount} exceeds the reserved {transfer.amount}"
                )
        amount = transfer.amount if command.amount is None else command.amount
        if transfer.state is State.CONFIRMED:
            if transfer.confirmed_amount != amount:
                raise ExistsWithDifferentFields("confirm", ["amount"])
            return Answer("confirm", copy.copy(transfer))
        if transfer.state is State.CANCELLED:
            raise TransferCancelled(f"transfer {transfer.id} was cancelled")
        if transfer.state is State.RESERVED and transfer.lapsed(self.now):
            self.expire(transfer.id)
        if transfer.state is State.EXPIRED:
            raise TransferExpired(f"transfer {transfer.id} expired at {transfer.expires_at}")
        self._release_holds(transfer, lapsed=False)
        legs = transfer.legs
        if amount != transfer.amount:
            legs = (replace(legs[0], amount=amount),)
        for (account_id, direction), delta in _deltas(legs).items():
            self.accounts[account_id].post(direction, delta)
        self._post_entries(transfer, legs)
        transfer.state = State.CONFIRMED
        transfer.confirmed_amount = amount
        transfer.resolved_at = self.now
        self.changed_transfers.add(transfer.id)
        self.events.append(TransferEvent("confirmed", copy.copy(transfer)))
        return Answer("confirm", copy.copy(transfer))

    def cancel(self, command: CancelCommand, actor: Actor) -> Answer:
        if command.id not in self.transfers:
            return self._fence(command.id, actor)
        transfer = self._visible_transfer(command.id, actor)
        if transfer.state is State.CONFIRMED:
            raise TransferConfirmed(f"transfer {transfer.id} was confirmed")
        if transfer.state is State.RESERVED and transfer.lapsed(self.now):
            self.expire(transfer.id)
        if transfer.state is State.RESERVED:
            self._release_holds(transfer, lapsed=False)
            transfer.state = State.CANCELLED
            transfer.resolved_at = self.now
            self.changed_transfers.add(transfer.id)
            self.events.append(TransferEvent("cancelled", copy.copy(transfer)))
        return Answer("cancel", copy.copy(transfer))

    def expire(self, transfer_id: UUID) -> None:
        """Release the holds of a lapsed reservation and mark it expired."""
        transfer = self.transfers[transfer_id]
        require(
            transfer.state is State.RESERVED and transfer.lapsed(self.now),
            f"transfer {transfer_id} is not a lapsed reservation",
        )
        self._release_holds(transfer, lapsed=True)
        transfer.state = State.EXPIRED
        transfer.resolved_at = transfer.expires_at
        self.changed_transfers.add(transfer.id)
        self.events.append(TransferEvent("expired", copy.copy(transfer)))

    # -- helpers ------------------------------------------------------------------------

    def _replay_reserve(self, existing: Transfer, command: ReserveCommand, actor: Actor) -> Answer:
        if existing.fenced:
            raise TransferCancelled(f"transfer {existing.id} was cancelled before any reserve")
        if not self._may_act(existing, actor):
            raise TransferNotFound(f"transfer {existing.id} not found")
        require(existing.request is not None, "a reserved transfer keeps its request")
        different = differing_fields(existing.request or {}, command.request)
        if different:
            raise ExistsWithDifferentFields("transfer", different)
        return Answer("reserve", existing.as_reserved())

    def _accounts_for(self, command: ReserveCommand, actor: Actor) -> dict[UUID, Account]:
        accounts: dict[UUID, Account] = {}
        for leg in command.legs:
            for account_id, debited in (
                (leg.debit_account_id, True),
                (leg.credit_account_id, False),
            ):
                account = self.accounts.get(account_id)
                # Debiting someone else's account: answer as if it did not exist.
                if account is None or (debited and not actor.owns(account.owner)):
                    raise AccountNotFound(f"account {account_id} not found")
                accounts[account_id] = account
        return accounts

    def _check_reservable(
        self,
        accounts: dict[UUID, Account],
        deltas: dict[tuple[UUID, Direction], int],
        legs: tuple[Leg, ...],
    ) -> None:
        """Every rule a reservation must pass, checked before anything changes."""
        for index, leg in enumerate(legs):
            for account_id in (leg.debit_account_id, leg.credit_account_id):
                account = accounts[account_id]
                if account.currency != leg.currency:
                    raise CurrencyMismatch(
                        f"account {account.id} holds {account.currency}, not {leg.currency} "
                        f"(legs[{index}])"
                    )
        for account in accounts.values():
            account.require_open()
        for (account_id, direction), amount in deltas.items():
            account = accounts[account_id]
            if not account.lowers_available(direction):
                continue
            trial = copy.copy(account)
            trial.hold(direction, amount)
            trial.check_limit()

    def _visible_transfer(self, transfer_id: UUID, actor: Actor) -> Transfer:
        transfer = self.transfers.get(transfer_id)
        if transfer is None or not self._may_act(transfer, actor):
            raise TransferNotFound(f"transfer {transfer_id} not found")
        return transfer

    def _may_act(self, transfer: Transfer, actor: Actor) -> bool:
        """Acting on a transfer means acting on the accounts it debits."""
        if actor.is_operator:
            return True
        if transfer.fenced:
            return transfer.created_by == actor.sub
        return all(
            (account := self.accounts.get(account_id)) is not None and actor.owns(account.owner)
            for account_id in transfer.debit_account_ids()
        )

    def _fence(self, transfer_id: UUID, actor: Actor) -> Answer:
        transfer = Transfer(
            id=transfer_id,
            state=State.CANCELLED,
            currency=None,
            legs=(),
            timeout_s=None,
            immediate=False,
            metadata={},
            created_by=actor.sub,
            created_at=self.now,
            expires_at=None,
            request=None,
            resolved_at=self.now,
        )
        self.transfers[transfer_id] = transfer
        self.new_transfers.add(transfer_id)
        self.events.append(TransferEvent("cancelled", copy.copy(transfer)))
        return Answer("cancel", copy.copy(transfer))

    def _release_holds(self, transfer: Transfer, *, lapsed: bool) -> None:
        for (account_id, direction), amount in _deltas(transfer.legs).items():
            self.accounts[account_id].release(direction, amount, lapsed=lapsed)
            self.changed_accounts.add(account_id)
        self.released_holds.append(transfer.id)

    def _post_entries(self, transfer: Transfer, legs: tuple[Leg, ...]) -> None:
        for index, leg in enumerate(legs):
            for direction, account_id in (
                (Direction.DEBIT, leg.debit_account_id),
                (Direction.CREDIT, leg.credit_account_id),
            ):
                self.entries.append(
                    Entry(
                        id=entry_id(transfer.id, index, direction),
                        transfer_id=transfer.id,
                        leg=index,
                        direction=direction,
                        account_id=account_id,
                        amount=leg.amount,
                        currency=leg.in_currency(),
                        posted_at=self.now,
                    )
                )
                self.changed_accounts.add(account_id)
        check_balanced(self.entries[-2 * len(legs) :])


def entry_id(transfer_id: UUID, leg: int, direction: Direction) -> UUID:
    """Deterministic: the database's primary key makes a second posting impossible."""
    return uuid5(ENTRY_NAMESPACE, f"{transfer_id}/{leg}/{direction}")


def check_balanced(entries: list[Entry]) -> None:
    """Double entry: per transfer, leg and currency, debits equal credits (so every currency
    balances on its own; nothing ever nets one currency against another)."""
    totals: dict[tuple[UUID, int, str], int] = {}
    for entry in entries:
        sign = 1 if entry.direction is Direction.DEBIT else -1
        key = (entry.transfer_id, entry.leg, entry.currency)
        totals[key] = totals.get(key, 0) + sign * entry.amount
    require(all(v == 0 for v in totals.values()), f"unbalanced posting: {totals}")


def _deltas(legs: tuple[Leg, ...]) -> dict[tuple[UUID, Direction], int]:
    """Per account and direction, the total the legs move."""
    deltas: dict[tuple[UUID, Direction], int] = {}
    for leg in legs:
        for key in (
            (leg.debit_account_id, Direction.DEBIT),
            (leg.credit_account_id, Direction.CREDIT),
        ):
            deltas[key] = deltas.get(key, 0) + leg.amount
    return deltas
