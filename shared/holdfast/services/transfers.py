"""Use cases of the transfers function: TCC operations, reads, and the expiry sweep.

`execute` runs any number of reserve/confirm/cancel operations in one transaction: it loads
the transfers they name and every account involved (locked in id order), applies each
operation to an in-memory `Book` in the order given, and writes the result with a handful of
multi-row statements. A single HTTP call is a batch of one; the batch endpoint and the event
handler share the same path. Each operation's answer is what it would have been alone.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from opentelemetry import trace
from sqlalchemy.engine import Connection

from holdfast import limits, telemetry
from holdfast.adapters import outbox, repository
from holdfast.adapters.crypto import MetadataCipher
from holdfast.adapters.database import Database
from holdfast.domain.actors import SYSTEM, Actor
from holdfast.domain.errors import BusinessError, InvariantViolation, TransferNotFound
from holdfast.domain.transfers import (
    Answer,
    Book,
    Command,
    ReserveCommand,
    State,
    Transfer,
    TransferEvent,
)
from holdfast.services.views import transfer_view, without_personal_data

SOURCE = "/holdfast/transfers"


@dataclass(frozen=True, slots=True)
class Operation:
    command: Command
    actor: Actor
    # The caller's trace: the events this operation causes carry it, even when another
    # request's thread writes the shared transaction.
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """One operation's result: an answer or the business error it was refused with."""

    answer: Answer | None
    error: BusinessError | None
    at: datetime
    expired: int = 0  # lapsed reservations this transaction expired on the way

    def body(self) -> dict[str, object]:
        if self.answer is None:
            raise ValueError("a refused operation has no body")
        answer = self.answer
        # The reserve answer is the state it left the transfer in; later reads show the rest.
        return transfer_view(answer.transfer, None if answer.operation == "reserve" else self.at)


def execute(db: Database, operations: Sequence[Operation]) -> list[Outcome]:
    """Apply operations in order; concurrent callers in this process share transactions."""
    traceparent = telemetry.current_traceparent()
    if traceparent is not None:
        operations = [
            dataclasses.replace(op, traceparent=op.traceparent or traceparent) for op in operations
        ]
    outcomes = _group_commit(db).submit(operations)
    span = trace.get_current_span()
    span.set_attribute("holdfast.operations", len(operations))
    if len(operations) == 1:
        span.set_attribute("holdfast.transfer.id", str(operations[0].command.id))
        outcome = outcomes[0]
        if outcome.answer is not None:
            span.set_attribute("holdfast.transfer.state", str(outcome.answer.transfer.state))
        if outcome.error is not None:
            span.set_attribute("holdfast.outcome", outcome.error.code)
    return outcomes


def execute_alone(db: Database, operations: Sequence[Operation]) -> list[Outcome]:
    """Apply operations in order in one transaction of their own (retried on 40001)."""
    outcomes = db.run(lambda connection: apply(connection, operations, db.cipher), pipelined=True)
    observe(operations, outcomes)
    return outcomes


class GroupCommit:
    """Concurrent calls in one process share one transaction (flat combining).

    Why: PostgreSQL at SERIALIZABLE aborts (40001) a transaction that waited for a row lock
    held by one that then committed, so N requests on one hot account would turn into a
    retry storm. Here the first caller becomes the writer and takes every operation queued
    so far (up to `batch_operations_max`) into one transaction; callers that arrive while it
    runs wait and are served by the next writer. Each caller still gets exactly the outcome
    its operations would have had alone, in arrival order. Across processes, row locks in id
    order and the bounded retry loop keep transactions correct.
    """

    def __init__(self, db: Database, operations_max: int = limits.batch_operations_max) -> None:
        self.db = db
        self.operations_max = operations_max
        self.condition = threading.Condition()
        self.queue: list[_Pending] = []
        self.writing = False
        self.transactions = 0

    def submit(self, operations: Sequence[Operation]) -> list[Outcome]:
        pending = _Pending(list(operations))
        with self.condition:
            self.queue.append(pending)
            while self.writing and not pending.done:
                self.condition.wait()
            if pending.done:
                return pending.result()
            self.writing = True
            batch = self._take(pending)
        try:
            self._write(batch)
        finally:
            with self.condition:
                self.writing = False
                self.condition.notify_all()
        return pending.result()

    def _take(self, first: _Pending) -> list[_Pending]:
        """The writer's own request, then queued ones in arrival order, up to the bound."""
        batch, size = [first], len(first.operations)
        for other in self.queue:
            if other is not first and size + len(other.operations) <= self.operations_max:
                batch.append(other)
                size += len(other.operations)
        self.queue = [p for p in self.queue if p not in batch]
        return batch

    def _write(self, batch: list[_Pending]) -> None:
        operations = [op for pending in batch for op in pending.operations]
        try:
            outcomes = execute_alone(self.db, operations)
        except BaseException as error:
            for pending in batch:
                pending.error = error
                pending.done = True
            raise
        self.transactions += 1
        start = 0
        for pending in batch:
            pending.outcomes = outcomes[start : start + len(pending.operations)]
            start += len(pending.operations)
            pending.done = True


@dataclass(eq=False)
class _Pending:
    operations: list[Operation]
    outcomes: list[Outcome] | None = None
    error: BaseException | None = None
    done: bool = False

    def result(self) -> list[Outcome]:
        if self.error is not None:
            raise self.error
        if self.outcomes is None:
            raise InvariantViolation("a finished request has outcomes or an error")
        return self.outcomes


_writers: weakref.WeakKeyDictionary[Database, GroupCommit] = weakref.WeakKeyDictionary()
_writers_lock = threading.Lock()


def _group_commit(db: Database) -> GroupCommit:
    with _writers_lock:
        writer = _writers.get(db)
        if writer is None:
            writer = _writers[db] = GroupCommit(db)
        return writer


def apply(
    connection: Connection,
    operations: Sequence[Operation],
    cipher: MetadataCipher,
) -> list[Outcome]:
    """The body of `execute`, for callers that already hold a transaction (events)."""
    transfer_ids = {op.command.id for op in operations}
    named = {
        account_id
        for op in operations
        if isinstance(op.command, ReserveCommand)
        for leg in op.command.legs
        for account_id in (leg.debit_account_id, leg.credit_account_id)
    }
    transfers, accounts, at = repository.lock_book(connection, transfer_ids, named, cipher)
    operations = [_fingerprinted(op, transfers, cipher) for op in operations]
    book = Book(now=at, accounts=accounts, transfers=transfers)
    outcomes: list[Outcome] = []
    for op in operations:
        try:
            outcomes.append(Outcome(book.apply(op.command, op.actor), None, at))
        except BusinessError as error:
            outcomes.append(Outcome(None, error, at))
    traces = {op.command.id: op.traceparent for op in operations if op.traceparent}
    writes = repository.Writes()
    outbox.queue(
        writes, connection, [_event(e, at, traces.get(e.transfer.id)) for e in book.events], at
    )
    repository.save_book(connection, book, cipher, writes)
    expired = sum(1 for e in book.events if e.kind == "expired")
    if expired:
        outcomes[0] = dataclasses.replace(outcomes[0], expired=expired)
    return outcomes


def _fingerprinted(
    op: Operation, transfers: dict[UUID, Transfer], cipher: MetadataCipher
) -> Operation:
    """Replace a reserve's metadata in its request by a keyed fingerprint (made with the key
    the stored one used, so a replay after key rotation still compares equal)."""
    command = op.command
    if not isinstance(command, ReserveCommand) or not isinstance(
        command.request.get("metadata"), dict
    ):
        return op
    existing = transfers.get(command.id)
    stored = existing.request.get("metadata") if existing and existing.request else None
    fingerprint = cipher.fingerprint(
        command.request["metadata"],
        row_id=str(command.id),
        key_id=cipher.fingerprint_key_id(stored),
    )
    request = {**command.request, "metadata": fingerprint}
    return dataclasses.replace(op, command=dataclasses.replace(command, request=request))


def observe(operations: Sequence[Operation], outcomes: Sequence[Outcome]) -> None:
    """Metrics per operation, once the transaction committed (a retry must not count twice)."""
    counter = telemetry.instruments().transfers
    for op, outcome in zip(operations, outcomes, strict=True):
        kind = type(op.command).__name__.removesuffix("Command").lower()
        outcome_code = outcome.error.code if outcome.error else "ok"
        counter.add(1, {"operation": kind, "outcome": outcome_code})
    expired = sum(outcome.expired for outcome in outcomes)
    if expired:
        telemetry.instruments().holds_expired.add(expired)


def _event(
    event: TransferEvent, at: datetime, traceparent: str | None = None
) -> outbox.OutboundEvent:
    return outbox.OutboundEvent(
        type=f"dev.holdfast.transfer.{event.kind}.v1",
        source=SOURCE,
        subject=str(event.transfer.id),
        data=without_personal_data(transfer_view(event.transfer, None)),
        traceparent=traceparent,
    )


def get_transfer(db: Database, transfer_id: UUID, actor: Actor) -> tuple[Transfer, datetime]:
    def work(connection: Connection) -> tuple[Transfer, datetime]:
        at = repository.now(connection)
        transfer = repository.load_transfers(
            connection, [transfer_id], lock=False, cipher=db.cipher
        ).get(transfer_id)
        if transfer is None or not _may_read(connection, transfer, actor, db.cipher):
            raise TransferNotFound(f"transfer {transfer_id} not found")
        return transfer, at

    return db.run(work)


def _may_read(
    connection: Connection, transfer: Transfer, actor: Actor, cipher: MetadataCipher
) -> bool:
    """A customer sees the transfers that touch one of their accounts (or that they fenced)."""
    if actor.is_operator:
        return True
    if transfer.fenced:
        return transfer.created_by == actor.sub
    accounts, _ = repository.load_accounts(
        connection, transfer.account_ids(), lock=False, cipher=cipher
    )
    return any(actor.owns(a.owner) for a in accounts.values())


def list_transfers(
    db: Database,
    actor: Actor,
    *,
    account_id: UUID | None,
    state: State | None,
    after: tuple[datetime, UUID] | None,
    limit: int,
) -> tuple[list[Transfer], datetime]:
    def work(connection: Connection) -> tuple[list[Transfer], datetime]:
        at = repository.now(connection)
        account_ids: list[UUID] | None = None
        created_by = None
        if account_id is not None:
            account = repository.get_account(connection, account_id, db.cipher)
            if account is None or not actor.owns(account.owner):
                return [], at
            account_ids = [account_id]
        elif not actor.is_operator:
            account_ids = repository.owned_account_ids(connection, actor.sub)
            if not account_ids:
                created_by = actor.sub
        page = repository.list_transfers(
            connection,
            at=at,
            account_ids=account_ids,
            created_by=created_by,
            state=state,
            after=after,
            limit=limit,
            cipher=db.cipher,
        )
        return page, at

    return db.run(work)


def measure_lapsed(db: Database) -> int:
    """Export how many reservations are past expiry and still unswept."""
    count = db.run(repository.lapsed_count)
    telemetry.instruments().lapsed_unswept.set(count)
    return count


def sweep_expired(db: Database, batch_max: int = limits.expiry_sweep_batch_max) -> int:
    """Move lapsed reservations to `expired` in one bounded batch; return how many."""

    def work(connection: Connection) -> int:
        at = repository.now(connection)
        ids = repository.lapsed_transfer_ids(connection, at, batch_max)
        if not ids:
            return 0
        transfers = repository.load_transfers(connection, ids, lock=True, cipher=db.cipher)
        account_ids = {a for x in transfers.values() for a in x.account_ids()}
        accounts, _ = repository.load_accounts(connection, account_ids, lock=True, cipher=db.cipher)
        book = Book(now=at, accounts=accounts, transfers=transfers)
        for transfer in transfers.values():
            if transfer.state is State.RESERVED and transfer.lapsed(at):
                book.expire(transfer.id)
        writes = repository.Writes()
        outbox.queue(writes, connection, [_event(e, at) for e in book.events], at)
        repository.save_book(connection, book, db.cipher, writes)
        telemetry.instruments().holds_expired.add(len(book.events))
        return len(book.events)

    return db.run(work)


__all__ = ["SYSTEM", "Operation", "Outcome", "execute", "get_transfer", "sweep_expired"]
