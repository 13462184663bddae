"""Use cases of the accounts function: open (idempotent), read, freeze, unfreeze, close."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from sqlalchemy.engine import Connection

from holdfast.adapters import outbox, repository
from holdfast.adapters.crypto import MetadataCipher
from holdfast.adapters.database import Database
from holdfast.domain.accounts import Account, OpenAccount, differing_fields
from holdfast.domain.actors import Actor
from holdfast.domain.errors import AccountNotFound, ExistsWithDifferentFields, Forbidden
from holdfast.services.views import account_view, without_personal_data

SOURCE = "/holdfast/accounts"


@dataclass(frozen=True, slots=True)
class Opened:
    account: Account  # as it was created: a replay answers the same body


def open_account(db: Database, command: OpenAccount, actor: Actor) -> Opened:
    return db.run(lambda connection: open_in(connection, command, actor, db.cipher))


def open_in(
    connection: Connection, command: OpenAccount, actor: Actor, cipher: MetadataCipher
) -> Opened:
    """Open an account, or replay the first answer for the same id and fields."""
    if not actor.owns(command.owner):
        raise Forbidden("without the operator scope an account can only be opened for yourself")
    at = repository.now(connection)
    existing = repository.get_account(connection, command.id, cipher)
    if existing is not None:
        first = OpenAccount(
            existing.id,
            existing.currency,
            existing.owner,
            existing.normal_balance,
            existing.overdraft_limit,
            existing.metadata,
        )
        different = differing_fields(first.creation(), command.creation())
        if different:
            raise ExistsWithDifferentFields("account", different)
        return Opened(first.open(existing.created_at))
    account = command.open(at)
    repository.insert_account(connection, account, cipher)
    outbox.append(
        connection,
        [
            outbox.OutboundEvent(
                type="dev.holdfast.account.opened.v1",
                source=SOURCE,
                subject=str(account.id),
                data=without_personal_data(account_view(account)),
            )
        ],
        at,
    )
    return Opened(account)


def get_account(db: Database, account_id: UUID, actor: Actor) -> Account:
    def work(connection: Connection) -> Account:
        account = repository.get_account(connection, account_id, db.cipher)
        if account is None or not actor.owns(account.owner):
            raise AccountNotFound(f"account {account_id} not found")
        return account

    return db.run(work)


Action = Literal["freeze", "unfreeze", "close"]


def change_status(db: Database, account_id: UUID, action: Action, actor: Actor) -> Account:
    """Owners may freeze and close their accounts; lifting a freeze takes `operator`."""

    def work(connection: Connection) -> Account:
        accounts, at = repository.load_accounts(
            connection, [account_id], lock=True, cipher=db.cipher
        )
        account = accounts.get(account_id)
        if account is None or at is None or not actor.owns(account.owner):
            raise AccountNotFound(f"account {account_id} not found")
        if action == "unfreeze" and not actor.is_operator:
            raise Forbidden("lifting a freeze needs the operator scope")
        changed = getattr(account, action)()
        if changed:
            repository.save_accounts(connection, [account], at)
        return account

    return db.run(work)
