"""The ledger never makes a transfer abort: sealing and auditing read at snapshot isolation.

The hazard, on PostgreSQL SERIALIZABLE: a confirm that inserts entries while a ledger
transaction scans them gets a read-write dependency from the ledger transaction. If the confirm
also read a row that another transaction changed and committed first, the confirm is the pivot
of a "dangerous structure" and is aborted with 40001. Each test builds exactly that structure;
the control runs the ledger transaction at SERIALIZABLE and shows the confirm is then aborted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from holdfast.adapters import ledger as repo
from holdfast.adapters.database import Database
from holdfast.adapters.signing import Ed25519Signer
from holdfast.domain.actors import SYSTEM
from holdfast.domain.transfers import ConfirmCommand
from holdfast.services import ledger as service
from holdfast.services import transfers
from tests.integration.ledger import support


def confirm_with_a_stale_read(
    db: Database, ledger_work: Callable[[], Any], *, seal_first: Callable[[], Any]
) -> None:
    """Confirm T reads account C; X changes C and commits; the ledger work runs; T commits."""
    source, target, other = support.open_accounts(db, 3)
    reservation = support.reserve([(source, target, 5)], immediate=False)
    support.pay(db, [reservation])
    support.pay(db, [support.reserve([(source, target, 1)])])  # something queued to seal
    seal_first()
    with db.engine.connect() as connection:
        transaction = connection.begin()
        outcome = transfers.apply(
            connection, [transfers.Operation(ConfirmCommand(reservation.id), SYSTEM)], db.cipher
        )[0]
        assert outcome.error is None
        connection.execute(
            sa.text("SELECT status FROM accounts WHERE id = :id"), {"id": other}
        ).scalar_one()
        with db.engine.begin() as x:  # X: a concurrent change of what T read, committed first
            x.execute(
                sa.text("UPDATE accounts SET metadata = '{\"x\": 1}' WHERE id = :id"), {"id": other}
            )
        done = threading.Event()
        thread = threading.Thread(target=lambda: (ledger_work(), done.set()))
        thread.start()
        thread.join(timeout=30)
        assert done.is_set()
        transaction.commit()


def serializable_ledger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repo, "snapshot", lambda connection, read_only: None)


WORK = {
    "seal": service.seal_pending,
    "trial_balance": lambda db, signer: service.trial_balance(db, None),
    "entries": lambda db, signer: service.list_entries(
        db, account_id=None, transfer_id=None, after=0, limit=100
    ),
}


@pytest.mark.parametrize("work", sorted(WORK))
def test_a_confirm_commits_while_the_ledger_reads_and_seals(
    db: Database, signer: Ed25519Signer, work: str
) -> None:
    confirm_with_a_stale_read(
        db, lambda: WORK[work](db, signer), seal_first=lambda: service.seal_pending(db, signer)
    )
    assert db.engine.connect().execute(sa.text("SELECT count(*) FROM ledger_entries")).scalar() == 4


@pytest.mark.parametrize("work", sorted(WORK))
def test_control_at_serializable_the_same_ledger_work_aborts_the_confirm(
    db: Database, signer: Ed25519Signer, work: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    serializable_ledger(monkeypatch)
    with pytest.raises(OperationalError) as raised:
        confirm_with_a_stale_read(
            db, lambda: WORK[work](db, signer), seal_first=lambda: service.seal_pending(db, signer)
        )
    assert getattr(raised.value.orig, "sqlstate", None) == "40001"
