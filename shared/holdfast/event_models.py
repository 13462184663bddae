"""The `data` of every outbound CloudEvent, as pydantic models, and where its JSON Schema lives.

The services build event data as plain dicts (`services.views`); these models describe those
dicts for consumers. A test feeds real outbound data through them and checks that the keys
match exactly, so a field added to a view without its model fails the suite. The generated
JSON Schemas are shipped in `schemas/events/<type>.json` (inbound types too, from the request
models of `entrypoints.schemas`) and named in each event's `dataschema` attribute.

Models allow unknown fields: the contract only ever adds fields, and a consumer validating a
v1 event against this schema must not break when one appears.

This module imports pydantic only, so every layer may use it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

SCHEMA_BASE_URL = "https://holdfast.dev/schemas/events"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

Minor = StrictInt  # an amount or a counter in the currency's minor unit


class Open(BaseModel):
    """Outbound data: documented fields required, new fields tolerated."""

    model_config = ConfigDict(extra="allow", frozen=True)


class Balance(Open):
    posted: Minor
    available: Minor


class AccountData(Open):
    """`dev.holdfast.account.opened.v1`: the account as `GET /v1/accounts/{id}` shows it, less
    `metadata`: personal data stays sealed in the database (read it through the API)."""

    id: UUID
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    owner: str
    status: Literal["open", "frozen", "closed"]
    normal_balance: Literal["credit", "debit"]
    overdraft_limit: Minor | None = Field(description="null: unlimited")
    debits_posted: Minor
    credits_posted: Minor
    debits_reserved: Minor
    credits_reserved: Minor
    balance: Balance
    created_at: datetime


class LegData(Open):
    debit_account_id: UUID
    credit_account_id: UUID
    amount: Minor
    currency: str = Field(
        pattern=r"^[A-Z]{3}$", description="this leg's; both its accounts hold it"
    )


class TransferData(Open):
    """`dev.holdfast.transfer.{reserved,confirmed,cancelled,expired}.v1`: the transfer after
    the change, less `metadata` (it may name a person: read it through the API). A transfer
    cancelled before it was reserved (fenced) has no legs, amount 0 and no currency. A
    multi-currency transfer (legs in more than one currency) has `currency` null: read each
    leg's `amount` and `currency`."""

    id: UUID
    state: Literal["reserved", "confirmed", "cancelled", "expired"]
    currency: str | None = Field(
        description="the currency every leg is in; null when they use several (or none)"
    )
    amount: Minor = Field(
        ge=0,
        description="the sum of the legs' amounts: an amount of money only when `currency` "
        "is not null",
    )
    debit_account_id: UUID | None = Field(description="single-leg transfers only")
    credit_account_id: UUID | None = Field(description="single-leg transfers only")
    legs: list[LegData]
    immediate: StrictBool
    timeout_s: StrictInt | None
    expires_at: datetime | None
    created_at: datetime
    confirmed_amount: Minor | None = Field(
        description="what the confirm posted: the sum of the legs' amounts, or less after a "
        "partial confirm of a single leg; null until confirmed"
    )
    resolved_at: datetime | None


class RejectedEventRef(Open):
    """The inbound event that was refused (deduplicate and correlate by source + id)."""

    source: str
    id: str
    type: str


class RejectionData(Open):
    """`dev.holdfast.{transfer,account}.rejected.v1`: an inbound event refused by a business
    rule. `code` is the contract's stable error code (as in problem+json)."""

    id: str = Field(description="the transfer or account the refused event was about")
    code: str
    title: str
    detail: str
    event: RejectedEventRef


class CheckpointData(Open):
    """`dev.holdfast.ledger.checkpoint.v1`: a signed checkpoint sealing a range of ledger
    entries (as `GET /v1/ledger/checkpoints` shows it). Every field is optional here: the
    ledger owns the exact shape, and the checkpoint API is authoritative."""

    number: StrictInt | None = None
    first_seq: StrictInt | None = None
    last_seq: StrictInt | None = None
    entry_count: StrictInt | None = None
    entries_root: str | None = Field(default=None, description="digest over the entries")
    previous_digest: str | None = Field(default=None, description="the previous checkpoint's")
    digest: str | None = None
    key_id: str | None = Field(default=None, description="which Ed25519 key signed it")
    created_at: datetime | None = None
    signature: str | None = Field(default=None, description="Ed25519 signature")


OUTBOUND: dict[str, type[BaseModel]] = {
    "dev.holdfast.account.opened.v1": AccountData,
    "dev.holdfast.account.rejected.v1": RejectionData,
    "dev.holdfast.transfer.reserved.v1": TransferData,
    "dev.holdfast.transfer.confirmed.v1": TransferData,
    "dev.holdfast.transfer.cancelled.v1": TransferData,
    "dev.holdfast.transfer.expired.v1": TransferData,
    "dev.holdfast.transfer.rejected.v1": RejectionData,
    "dev.holdfast.ledger.checkpoint.v1": CheckpointData,
}


def dataschema(event_type: str) -> str:
    """The `dataschema` URI of an event type; `schemas/events/<type>.json` has that `$id`."""
    return f"{SCHEMA_BASE_URL}/{event_type}.json"


def json_schema(event_type: str, model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema document of one event type's `data`."""
    body = model.model_json_schema(mode="validation")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": dataschema(event_type),
        **body,
        "title": event_type,
        "description": (model.__doc__ or "").strip() or event_type,
    }


def render(document: dict[str, Any]) -> str:
    """Stable text of a schema file: sorted keys, two-space indent, final newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
