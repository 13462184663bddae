"""Accounts: balances, status and the overdraft rule.

Balances are four monotonic counters plus the part of the reservations whose holds have
lapsed (expired but not yet swept). For a credit-normal account

    posted    = credits_posted - debits_posted
    available = posted - (debits_reserved - debits_lapsed)

and the mirror image for a debit-normal account. Invariant: after every change that lowers
`available`, available >= -overdraft_limit (no limit when overdraft_limit is None).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from holdfast import limits
from holdfast.domain.errors import (
    AccountNotEmpty,
    AccountNotOpen,
    InsufficientFunds,
    InvalidInput,
    require,
)


class Status(StrEnum):
    OPEN = "open"
    FROZEN = "frozen"
    CLOSED = "closed"


class NormalBalance(StrEnum):
    CREDIT = "credit"
    DEBIT = "debit"


class Direction(StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"


@dataclass(slots=True)
class Account:
    id: UUID
    currency: str
    owner: str
    normal_balance: NormalBalance
    overdraft_limit: int | None
    metadata: dict[str, Any]
    created_at: datetime
    status: Status = Status.OPEN
    debits_posted: int = 0
    credits_posted: int = 0
    debits_reserved: int = 0
    credits_reserved: int = 0
    # Parts of *_reserved held by holds past their expiry that no sweep has released yet.
    debits_lapsed: int = 0
    credits_lapsed: int = 0
    # Fields that identify the account for idempotent create (compared on replay).
    creation: dict[str, Any] = field(default_factory=dict)

    @property
    def effective_debits_reserved(self) -> int:
        return self.debits_reserved - self.debits_lapsed

    @property
    def effective_credits_reserved(self) -> int:
        return self.credits_reserved - self.credits_lapsed

    @property
    def posted(self) -> int:
        if self.normal_balance is NormalBalance.CREDIT:
            return self.credits_posted - self.debits_posted
        return self.debits_posted - self.credits_posted

    @property
    def available(self) -> int:
        if self.normal_balance is NormalBalance.CREDIT:
            return self.posted - self.effective_debits_reserved
        return self.posted - self.effective_credits_reserved

    def lowers_available(self, direction: Direction) -> bool:
        """A debit lowers a credit-normal account; a credit lowers a debit-normal one."""
        return (direction is Direction.DEBIT) == (self.normal_balance is NormalBalance.CREDIT)

    # -- status -------------------------------------------------------------------------

    def require_open(self) -> None:
        if self.status is not Status.OPEN:
            raise AccountNotOpen(f"account {self.id} is {self.status}")

    def freeze(self) -> bool:
        """Return True if the status changed."""
        if self.status is Status.CLOSED:
            raise AccountNotOpen(f"account {self.id} is closed")
        changed = self.status is Status.OPEN
        self.status = Status.FROZEN
        return changed

    def unfreeze(self) -> bool:
        if self.status is Status.CLOSED:
            raise AccountNotOpen(f"account {self.id} is closed")
        changed = self.status is Status.FROZEN
        self.status = Status.OPEN
        return changed

    def close(self) -> bool:
        if self.status is Status.CLOSED:
            return False
        if self.posted != 0 or self.effective_debits_reserved or self.effective_credits_reserved:
            raise AccountNotEmpty(
                f"account {self.id} has a posted balance or reservations; move them first"
            )
        self.status = Status.CLOSED
        return True

    # -- money ----------------------------------------------------------------------------

    def check_limit(self) -> None:
        """The overdraft rule, checked after every change that lowers `available`."""
        if self.overdraft_limit is not None and self.available < -self.overdraft_limit:
            raise InsufficientFunds(f"account {self.id} has insufficient available funds")

    def hold(self, direction: Direction, amount: int) -> None:
        if direction is Direction.DEBIT:
            self.debits_reserved = _add(self.debits_reserved, amount)
        else:
            self.credits_reserved = _add(self.credits_reserved, amount)

    def release(self, direction: Direction, amount: int, *, lapsed: bool) -> None:
        if direction is Direction.DEBIT:
            self.debits_reserved -= amount
            if lapsed:
                self.debits_lapsed -= amount
        else:
            self.credits_reserved -= amount
            if lapsed:
                self.credits_lapsed -= amount
        require(
            0 <= self.debits_lapsed <= self.debits_reserved
            and 0 <= self.credits_lapsed <= self.credits_reserved,
            f"account {self.id}: released more than was held",
        )

    def post(self, direction: Direction, amount: int) -> None:
        if direction is Direction.DEBIT:
            self.debits_posted = _add(self.debits_posted, amount)
        else:
            self.credits_posted = _add(self.credits_posted, amount)


def _add(counter: int, amount: int) -> int:
    total = counter + amount
    if total > limits.balance_minor_abs_max:
        raise InvalidInput("the account's counters would overflow", code="balance_overflow")
    return total


def creation_fields(
    currency: str,
    owner: str,
    normal_balance: NormalBalance,
    overdraft_limit: int | None,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """The fields an idempotent create compares (the request, with defaults applied)."""
    return {
        "currency": currency,
        "owner": owner,
        "normal_balance": str(normal_balance),
        "overdraft_limit": overdraft_limit,
        "metadata": metadata,
    }


def differing_fields(first: dict[str, Any], again: dict[str, Any]) -> list[str]:
    return sorted(k for k in first.keys() | again.keys() if first.get(k) != again.get(k))


@dataclass(frozen=True, slots=True)
class OpenAccount:
    id: UUID
    currency: str
    owner: str
    normal_balance: NormalBalance
    overdraft_limit: int | None
    metadata: dict[str, Any]

    def creation(self) -> dict[str, Any]:
        return creation_fields(
            self.currency, self.owner, self.normal_balance, self.overdraft_limit, self.metadata
        )

    def open(self, at: datetime) -> Account:
        return Account(
            id=self.id,
            currency=self.currency,
            owner=self.owner,
            normal_balance=self.normal_balance,
            overdraft_limit=self.overdraft_limit,
            metadata=self.metadata,
            created_at=at,
        )
