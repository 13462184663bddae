"""The contract's JSON shapes of accounts and transfers (HTTP bodies and event data)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from holdfast.domain.accounts import Account
from holdfast.domain.transfers import Transfer


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def account_view(account: Account) -> dict[str, Any]:
    return {
        "id": str(account.id),
        "currency": account.currency,
        "owner": account.owner,
        "status": str(account.status),
        "normal_balance": str(account.normal_balance),
        "overdraft_limit": account.overdraft_limit,
        "debits_posted": account.debits_posted,
        "credits_posted": account.credits_posted,
        "debits_reserved": account.effective_debits_reserved,
        "credits_reserved": account.effective_credits_reserved,
        "balance": {"posted": account.posted, "available": account.available},
        "metadata": account.metadata,
        "created_at": rfc3339(account.created_at),
    }


def transfer_view(transfer: Transfer, now: datetime | None) -> dict[str, Any]:
    """`now` turns a lapsed reservation into `expired`; None renders the state as stored.

    Every leg shows its currency; the top-level `currency` is the one the legs share (null
    for a multi-currency or fenced transfer), and `amount` the sum of the legs'."""
    state = transfer.state if now is None else transfer.effective_state(now)
    single = transfer.legs[0] if len(transfer.legs) == 1 else None
    return {
        "id": str(transfer.id),
        "state": str(state),
        "currency": transfer.currency,
        "amount": transfer.amount,
        "debit_account_id": str(single.debit_account_id) if single else None,
        "credit_account_id": str(single.credit_account_id) if single else None,
        "legs": [
            {
                "debit_account_id": str(leg.debit_account_id),
                "credit_account_id": str(leg.credit_account_id),
                "amount": leg.amount,
                "currency": leg.in_currency(),
            }
            for leg in transfer.legs
        ],
        "immediate": transfer.immediate,
        "timeout_s": transfer.timeout_s,
        "expires_at": rfc3339(transfer.expires_at),
        "metadata": transfer.metadata,
        "created_at": rfc3339(transfer.created_at),
        "confirmed_amount": transfer.confirmed_amount,
        "resolved_at": rfc3339(transfer.resolved_at),
    }


def without_personal_data(view: dict[str, Any]) -> dict[str, Any]:
    """Event data: the view less `metadata`, which may name a person. Events sit in the
    outbox unsealed and reach every consumer on the broker; metadata stays sealed."""
    return {k: v for k, v in view.items() if k != "metadata"}
