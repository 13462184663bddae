"""Request models of the HTTP API and of inbound CloudEvent data (the same shapes).

Shape rules live here (strict integers, UUIDs, ranges, unknown fields refused); money rules
live in the domain, which checks again. The OpenAPI document is generated from these models.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from holdfast import limits
from holdfast.domain.accounts import NormalBalance, OpenAccount
from holdfast.domain.errors import InvariantViolation
from holdfast.domain.money import ISO_4217
from holdfast.domain.transfers import (
    CancelCommand,
    ConfirmCommand,
    Leg,
    ReserveCommand,
)

Amount = Annotated[StrictInt, Field(ge=limits.amount_minor_min, le=limits.amount_minor_max)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["EUR"])]
Metadata = Annotated[dict[str, Any], Field(default_factory=dict)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_currency(value: str) -> str:
    if value not in ISO_4217:
        raise ValueError("not an ISO 4217 currency code")
    return value


def _check_optional_currency(value: str | None) -> str | None:
    return None if value is None else _check_currency(value)


def _check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > limits.metadata_keys_max:
        raise ValueError(f"at most {limits.metadata_keys_max} metadata keys")
    if len(json.dumps(value)) > limits.metadata_bytes_max:
        raise ValueError(f"metadata is larger than {limits.metadata_bytes_max} bytes")
    return value


class AccountIn(Strict):
    id: UUID
    currency: Currency
    owner: Annotated[
        str,
        Field(min_length=1, max_length=limits.owner_length_max, pattern=r"^[^\x00-\x1f\x7f]+$"),
    ]
    normal_balance: Literal["credit", "debit"] = "credit"
    overdraft_limit: Annotated[StrictInt, Field(ge=0, le=limits.amount_minor_max)] | None = 0
    metadata: Metadata

    _currency = field_validator("currency")(_check_currency)
    _metadata = field_validator("metadata")(_check_metadata)

    def command(self) -> OpenAccount:
        return OpenAccount(
            id=self.id,
            currency=self.currency,
            owner=self.owner,
            normal_balance=NormalBalance(self.normal_balance),
            overdraft_limit=self.overdraft_limit,
            metadata=self.metadata,
        )


class LegIn(Strict):
    debit_account_id: UUID
    credit_account_id: UUID
    amount: Amount
    currency: Currency | None = Field(
        default=None,
        description=(
            "this leg's currency (both its accounts hold it); omitted: the transfer's "
            "`currency`. Legs in different currencies make a multi-currency transfer, which "
            "then has no top-level `currency`."
        ),
    )

    _currency = field_validator("currency")(_check_optional_currency)


class ReserveIn(Strict):
    id: UUID
    currency: Currency | None = Field(
        default=None,
        description=(
            "the transfer's currency, and that of every leg that names none; may be omitted "
            "when every leg names its own. A leg naming another currency: 422 "
            "`currency_mismatch`."
        ),
    )
    debit_account_id: UUID | None = None
    credit_account_id: UUID | None = None
    amount: Amount | None = None
    legs: (
        Annotated[list[LegIn], Field(min_length=1, max_length=limits.transfer_legs_max)] | None
    ) = None
    timeout_s: Annotated[
        StrictInt,
        Field(ge=limits.reservation_timeout_s_min, le=limits.reservation_timeout_s_max),
    ] = limits.reservation_timeout_s_default
    immediate: StrictBool = False
    metadata: Metadata

    _currency = field_validator("currency")(_check_optional_currency)
    _metadata = field_validator("metadata")(_check_metadata)

    @model_validator(mode="after")
    def _one_form(self) -> ReserveIn:
        single = (self.debit_account_id, self.credit_account_id, self.amount)
        if self.legs is None and any(v is None for v in single):
            raise ValueError("give debit_account_id, credit_account_id and amount, or legs")
        if self.legs is not None and any(v is not None for v in single):
            raise ValueError("give either legs or the single-leg fields, not both")
        if self.currency is None and (
            self.legs is None or any(leg.currency is None for leg in self.legs)
        ):
            raise ValueError("give currency, or a currency on every leg")
        return self

    def command(self) -> ReserveCommand:
        if self.legs is not None:
            legs = tuple(
                Leg(x.debit_account_id, x.credit_account_id, x.amount, x.currency)
                for x in self.legs
            )
        else:
            debit, credit, amount = self.debit_account_id, self.credit_account_id, self.amount
            if debit is None or credit is None or amount is None:
                raise InvariantViolation("validated single-leg fields are missing")
            legs = (Leg(debit, credit, amount),)
        return ReserveCommand(
            id=self.id,
            currency=self.currency,
            legs=legs,
            timeout_s=self.timeout_s,
            immediate=self.immediate,
            metadata=self.metadata,
            request=self.fingerprint(),
        )

    def fingerprint(self) -> dict[str, Any]:
        """The request as the idempotency check compares it (the service replaces metadata
        with a keyed digest before anything is compared or stored)."""
        return self.model_dump(mode="json", exclude_none=True)


class ConfirmIn(Strict):
    amount: Amount | None = None


class ConfirmEventIn(ConfirmIn):
    id: UUID

    def command(self) -> ConfirmCommand:
        return ConfirmCommand(self.id, self.amount)


class CancelEventIn(Strict):
    id: UUID

    def command(self) -> CancelCommand:
        return CancelCommand(self.id)


class OperationIn(BaseModel):
    """One batch operation: `op` plus the fields of the single call (checked one by one)."""

    model_config = ConfigDict(extra="allow")
    op: Literal["reserve", "confirm", "cancel"]


class BatchIn(Strict):
    operations: Annotated[
        list[dict[str, Any]], Field(min_length=1, max_length=limits.batch_operations_max)
    ]
