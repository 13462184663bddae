"""Helpers of the ledger tests: accounts and transfers made through the real services."""

from __future__ import annotations

import contextlib
import json
import random
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from holdfast.adapters.database import Database
from holdfast.adapters.signing import Ed25519Signer
from holdfast.domain.accounts import NormalBalance, OpenAccount
from holdfast.domain.actors import SYSTEM
from holdfast.domain.transfers import ConfirmCommand, Leg, ReserveCommand
from holdfast.services import accounts, transfers
from holdfast.services import ledger as service


def open_accounts(
    db: Database,
    count: int,
    *,
    currency: str = "EUR",
    normal_balance: NormalBalance = NormalBalance.CREDIT,
    overdraft_limit: int | None = None,
) -> list[UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    for account_id in ids:
        accounts.open_account(
            db,
            OpenAccount(account_id, currency, "bank", normal_balance, overdraft_limit, {}),
            SYSTEM,
        )
    return ids


def reserve(
    legs: Sequence[tuple[UUID, UUID, int]],
    *,
    currency: str = "EUR",
    immediate: bool = True,
    transfer_id: UUID | None = None,
) -> ReserveCommand:
    transfer_id = transfer_id or uuid.uuid4()
    return ReserveCommand(
        id=transfer_id,
        currency=currency,
        legs=tuple(Leg(debit, credit, amount) for debit, credit, amount in legs),
        timeout_s=300,
        immediate=immediate,
        metadata={},
        request={"id": str(transfer_id), "legs": [[str(d), str(c), a] for d, c, a in legs]},
    )


def pay(db: Database, commands: Sequence[ReserveCommand]) -> None:
    """Run reserve commands (immediate ones post entries) in one transaction; all must pass."""
    outcomes = transfers.execute(db, [transfers.Operation(c, SYSTEM) for c in commands])
    errors = [o.error for o in outcomes if o.error is not None]
    assert not errors, errors


def confirm(db: Database, transfer_id: UUID, amount: int | None = None) -> None:
    outcome = transfers.execute(
        db, [transfers.Operation(ConfirmCommand(transfer_id, amount), SYSTEM)]
    )[0]
    assert outcome.error is None, outcome.error


@contextlib.contextmanager
def confirm_held_open(db: Database, transfer_id: UUID) -> Iterator[None]:
    """Confirm `transfer_id` in a transaction left open while the block runs (other confirms
    commit and sealers seal meanwhile), then commit it: a confirm that commits late."""
    with db.engine.connect() as connection:
        transaction = connection.begin()
        transfers.apply(
            connection, [transfers.Operation(ConfirmCommand(transfer_id), SYSTEM)], db.cipher
        )
        yield
        transaction.commit()


def random_payments(
    db: Database, account_ids: Sequence[UUID], count: int, *, seed: int = 7, per_batch: int = 50
) -> None:
    """`count` immediate transfers between random accounts (some with several legs)."""
    rng = random.Random(seed)
    commands = []
    for _ in range(count):
        legs = []
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            debit, credit = rng.sample(list(account_ids), 2)
            legs.append((debit, credit, rng.randint(1, 10_000)))
        commands.append(reserve(legs))
    for start in range(0, len(commands), per_batch):
        pay(db, commands[start : start + per_batch])


def seal_all(db: Database, signer: Ed25519Signer) -> list[Any]:
    sealed = []
    while True:
        batch = service.seal_pending(db, signer)
        if not batch:
            return sealed
        sealed.extend(batch)


def export_lines(db: Database) -> list[dict[str, Any]]:
    span = service.export_range(db, None, None)
    return list(service.export_records(db, span))


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
    return path
