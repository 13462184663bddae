"""The one exception tree of Holdfast.

    HoldfastError
    ├── BusinessError            expected outcomes; each carries the contract's stable `code`
    │   ├── InvalidInput             validation_error (and friends)
    │   ├── NotFound                 account_not_found, transfer_not_found
    │   ├── Forbidden                forbidden
    │   ├── ExistsWithDifferentFields
    │   ├── AccountNotOpen, AccountNotEmpty
    │   ├── InsufficientFunds, CurrencyMismatch, AmountExceedsReserved
    │   └── TransferCancelled, TransferExpired, TransferConfirmed
    ├── Unauthorized             no valid bearer token
    ├── TransientError           retried with a bound: serialization failure, racing insert
    └── InvariantViolation       a programmer error: never caught, the invocation fails loudly

One adapter (entrypoints.problems) turns a BusinessError into problem+json or a rejection event.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar


class HoldfastError(Exception):
    """Root of every error Holdfast raises on purpose."""


class BusinessError(HoldfastError):
    code: ClassVar[str] = "business_error"
    title: ClassVar[str] = "Request rejected"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(BusinessError):
    code = "validation_error"
    title = "Invalid input"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        if code is not None:
            self.code = code  # type: ignore[misc]


class NotFound(BusinessError):
    title = "Not found"


class AccountNotFound(NotFound):
    code = "account_not_found"
    title = "Account not found"


class TransferNotFound(NotFound):
    code = "transfer_not_found"
    title = "Transfer not found"


class Forbidden(BusinessError):
    code = "forbidden"
    title = "Forbidden"


class ExistsWithDifferentFields(BusinessError):
    code = "exists_with_different_fields"
    title = "Id already used with different fields"

    def __init__(self, kind: str, fields: Iterable[str]) -> None:
        self.fields = sorted(fields)
        super().__init__(f"{kind} exists with different fields: {', '.join(self.fields)}")


class AccountNotOpen(BusinessError):
    code = "account_not_open"
    title = "Account is not open"


class AccountNotEmpty(BusinessError):
    code = "account_not_empty"
    title = "Account is not empty"


class InsufficientFunds(BusinessError):
    code = "insufficient_funds"
    title = "Insufficient funds"


class CurrencyMismatch(BusinessError):
    code = "currency_mismatch"
    title = "Currency mismatch"


class AmountExceedsReserved(BusinessError):
    code = "amount_exceeds_reserved"
    title = "Amount exceeds the reserved amount"


class TransferCancelled(BusinessError):
    code = "transfer_cancelled"
    title = "Transfer was cancelled"


class TransferExpired(BusinessError):
    code = "transfer_expired"
    title = "Transfer expired"


class TransferConfirmed(BusinessError):
    code = "transfer_confirmed"
    title = "Transfer was confirmed"


class Unauthorized(HoldfastError):
    code = "unauthorized"


class TransientError(HoldfastError):
    """A failure that a retry of the whole transaction may cure."""


class SerializationFailure(TransientError):
    """SQLSTATE 40001 (or a deadlock): the database asks the client to retry."""


class ConcurrentInsert(TransientError):
    """Another transaction inserted the same client-chosen id first: re-read and decide again."""


class InvariantViolation(HoldfastError):
    """Corrupt code or data. Never caught: crash the invocation, roll back the transaction."""


def require(condition: bool, message: str) -> None:
    """Assert an invariant in a way `python -O` keeps."""
    if not condition:
        raise InvariantViolation(message)
