"""Pydantic models of every HTTP response body, for the OpenAPI document (`openapi.py`).

The handlers build their bodies as plain dicts (`services.views`, `entrypoints.ledger`); these
models describe those dicts exactly. They are closed (`additionalProperties: false`): the fuzz
run validates every live answer against them, so a field added to a view without its model
here fails the suite instead of going undocumented. Clients should still ignore fields they do
not know: the contract only ever adds fields (the document's description says so).

Nothing here is used to build a response; this module only describes them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

Minor = Annotated[StrictInt, Field(description="an amount or counter in the minor unit")]
Time = Annotated[datetime, Field(description="RFC 3339, UTC (`Z`), microseconds")]
Cursor = Annotated[
    str | None, Field(description="pass as `after` for the next page; null on the last page")
]
Hex = Annotated[str, Field(pattern=r"^[0-9a-f]+$")]


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldError(Closed):
    field: str = Field(description="dotted path of the offending field; empty: the body")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details with the contract's stable machine `code`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(description="https://holdfast.dev/problems/<code with dashes>")
    title: str
    status: StrictInt = Field(ge=400, le=599)
    detail: str
    code: str = Field(description="stable machine code, e.g. insufficient_funds")
    errors: list[FieldError] | None = Field(
        default=None, description="validation_error (and malformed event data): what failed"
    )
    retry_after_s: float | None = Field(
        default=None, description="rate_limited: seconds until the next request may go ahead"
    )


class Balance(Closed):
    posted: Minor
    available: Minor


class Account(Closed):
    """An account. For a credit-normal account posted = credits_posted - debits_posted and
    available = posted - debits_reserved (the mirror image for debit-normal accounts)."""

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
    metadata: dict[str, Any]
    created_at: Time


class Leg(Closed):
    debit_account_id: UUID
    credit_account_id: UUID
    amount: Minor
    currency: str = Field(
        pattern=r"^[A-Z]{3}$", description="this leg's; both its accounts hold it"
    )


class Transfer(Closed):
    """A transfer. A transfer cancelled before it was ever reserved (fenced) has no legs,
    amount 0 and no currency; the single-leg fields are null for multi-leg transfers. A
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
    legs: list[Leg]
    immediate: StrictBool
    timeout_s: StrictInt | None
    expires_at: Time | None
    metadata: dict[str, Any]
    created_at: Time
    confirmed_amount: Minor | None = Field(
        description="what the confirm posted: the sum of the legs' amounts, or less after a "
        "partial confirm of a single leg; null until confirmed"
    )
    resolved_at: Time | None


class TransferPage(Closed):
    transfers: list[Transfer]
    next: Cursor


class BatchResults(Closed):
    """One result per operation, in order: the body or the problem the single call gives."""

    results: list[Transfer | Problem]


class LedgerEntry(Closed):
    seq: StrictInt = Field(ge=1, description="the ledger order, assigned by sealing")
    transfer_id: UUID
    leg: StrictInt = Field(ge=0)
    direction: Literal["debit", "credit"]
    account_id: UUID
    amount: Minor
    currency: str
    posted_at: Time


class EntryPage(Closed):
    entries: list[LedgerEntry]
    next: Cursor


class PostedBalance(Closed):
    posted: Minor


class AccountBalance(Closed):
    """The posted balance at `as_of`, summed from the account's entries."""

    account_id: UUID
    currency: str
    normal_balance: Literal["credit", "debit"]
    as_of: Time
    debits_posted: Minor
    credits_posted: Minor
    balance: PostedBalance
    entries: StrictInt = Field(ge=0, description="entries posted up to as_of")


class CurrencyTotals(Closed):
    currency: str
    debits: Minor
    credits: Minor
    balanced: StrictBool


class TrialBalance(Closed):
    as_of: Time
    currencies: list[CurrencyTotals]
    balanced: StrictBool


class Checkpoint(Closed):
    """A signed checkpoint sealing entries first_seq..last_seq (docs/ledger.md, format v1)."""

    number: StrictInt = Field(ge=1)
    first_seq: StrictInt = Field(ge=1)
    last_seq: StrictInt = Field(ge=1)
    entry_count: StrictInt = Field(ge=1)
    entries_root: Hex = Field(description="RFC 6962 Merkle root of the entries, SHA-256 hex")
    previous_digest: Hex
    digest: Hex
    key_id: str = Field(description="the Ed25519 key that signed it")
    created_at: Time
    signature: Hex = Field(description="Ed25519 signature, hex")


class EntryProof(Closed):
    """An entry, the signed checkpoint that sealed it, and its RFC 6962 audit path to that
    checkpoint's `entries_root` (`holdfast audit prove` checks it; docs/ledger.md)."""

    entry: LedgerEntry
    checkpoint: Checkpoint
    leaf_index: StrictInt = Field(
        ge=0, description="0-based position in the checkpoint: seq - first_seq"
    )
    audit_path: list[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(
        description="sibling hashes (SHA-256, lowercase hex) from the entry's leaf up to "
        "entries_root, nearest first (RFC 6962 PATH)"
    )


class CheckpointPage(Closed):
    checkpoints: list[Checkpoint]
    next: Cursor


class SigningKey(Closed):
    key_id: str
    algorithm: Literal["Ed25519"]
    public_key: str = Field(description="PEM (SubjectPublicKeyInfo)")
    first_used_at: Time
    current: StrictBool


class PublicKey(Closed):
    """The current checkpoint signing key, and every key that ever signed a checkpoint."""

    key_id: str
    algorithm: Literal["Ed25519"]
    public_key: str = Field(description="PEM (SubjectPublicKeyInfo): `--public-key` takes it")
    keys: list[SigningKey]


__all__ = [
    "Account",
    "AccountBalance",
    "BatchResults",
    "Checkpoint",
    "CheckpointPage",
    "EntryPage",
    "EntryProof",
    "LedgerEntry",
    "Problem",
    "PublicKey",
    "Transfer",
    "TransferPage",
    "TrialBalance",
]
