"""Use cases of the ledger function: sealing, the auditor's reads, the export and the check.

Sealing (`seal_once`) takes the oldest queued entries (completed to whole transfers), gives
them the seqs after the latest checkpoint and writes checkpoint N + 1, in one transaction that
touches nothing a transfer writes except the queue rows it seals. Every entry enqueues itself
in its own confirm's transaction, so an entry that commits late (with an earlier posted_at)
is simply in a later checkpoint: the ledger order is seq, and it is complete by construction.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import logging
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from opentelemetry import context as otel_context
from sqlalchemy.engine import Connection

from holdfast import limits, telemetry
from holdfast.adapters import ledger as repo
from holdfast.adapters import ledger_totals as totals_repo
from holdfast.adapters import outbox, repository
from holdfast.adapters.database import Database
from holdfast.adapters.signing import Ed25519Signer, public_pem
from holdfast.domain import ledger, ledger_totals, proofs
from holdfast.domain.accounts import NormalBalance
from holdfast.domain.errors import (
    AccountNotFound,
    ConcurrentInsert,
    InvalidInput,
    InvariantViolation,
    NotFound,
    SerializationFailure,
    require,
)

log = logging.getLogger(__name__)
Row = TypeVar("Row", repo.SealedRow, repo.ExportRow)
# Threads reading export pages ahead: two keep the database busy on both of a small
# machine's cores while this process writes (measured in docs/capacity.md).
EXPORT_READERS = 2
SOURCE = "/holdfast/ledger"
CHECK_FINDINGS_MAX = 20


class CheckpointNotFound(NotFound):
    code = "not_found"
    title = "Checkpoint not found"


class EntryNotFound(NotFound):
    code = "entry_not_found"
    title = "Entry not found"


# -- sealing ----------------------------------------------------------------------------------


def seal_once(
    db: Database, signer: Ed25519Signer, batch: int = limits.ledger_seal_batch_entries
) -> ledger.Checkpoint | None:
    """Seal one batch into the next checkpoint; None when nothing waits, or when other
    sealers kept sealing first (`Database.run` re-reads after each lost race, then gives up:
    the entries were sealed, by them). A lost race shows as a duplicate key, or as 40001 on
    every attempt while the head moved on; 40001 with a head that never moved is raised."""
    pem = public_pem(signer.public_key)
    heads: list[int] = []  # the head each attempt found

    def work(connection: Connection) -> ledger.Checkpoint | None:
        repo.snapshot(connection, read_only=False)
        previous = repo.latest_checkpoint(connection)
        heads.append(previous.number if previous else 0)
        entries = repo.queued_batch(connection, batch)
        if not entries:
            return None
        at = repository.now(connection)
        sealed = ledger.seal(previous, entries, created_at=at, signer=signer)
        repo.insert_sealed(connection, sealed)
        record_totals(connection, sealed)
        repo.record_key(connection, signer.key_id, pem, at)
        outbox.append(connection, [checkpoint_event(sealed.checkpoint)], at)
        return sealed.checkpoint

    try:
        return db.run(work)
    except ConcurrentInsert as error:
        # Every attempt found another sealer had taken the checkpoint or its entries first:
        # they were sealed, which is all this call was for. Nothing to report.
        if str(error) not in repo.RACE_CONSTRAINTS:
            raise
        log.info("other sealers sealed first (%s); leaving it to them", error)
        return None
    except SerializationFailure:
        if not heads or _head(db) == heads[0]:
            raise  # nobody sealed meanwhile: not a lost race, a real failure to report
        log.info("other sealers sealed first (40001 on every attempt); leaving it to them")
        return None


def _head(db: Database) -> int:
    def work(connection: Connection) -> int:
        repo.snapshot(connection, read_only=True)
        latest = repo.latest_checkpoint(connection)
        return latest.number if latest else 0

    return int(db.run(work))


def record_totals(connection: Connection, sealed: ledger.Sealed) -> None:
    """The running totals at the seal points of a new checkpoint (domain.ledger_totals)."""
    previous = totals_repo.latest_point(connection)
    accounts = sorted({e.account_id for e in sealed.entries})
    recorded = ledger_totals.record(
        previous,
        totals_repo.account_totals(connection, accounts),
        totals_repo.currency_totals(connection, previous.last_seq) if previous else {},
        sealed.checkpoint.number,
        sealed.entries,
        block_entries=limits.ledger_totals_block_entries,
    )
    totals_repo.insert(connection, recorded)


def seal_pending(
    db: Database, signer: Ed25519Signer, batches: int = limits.ledger_seal_batches_per_tick_max
) -> list[ledger.Checkpoint]:
    """Seal until the queue is empty, at most `batches` checkpoints."""
    sealed = []
    for _ in range(batches):
        checkpoint = seal_once(db, signer)
        if checkpoint is None:
            break
        sealed.append(checkpoint)
        telemetry.instruments().ledger_sealed.add(checkpoint.entry_count)
    return sealed


def measure_queue(db: Database) -> int:
    """Export how many entries wait to be sealed and how long the oldest has waited."""

    def work(connection: Connection) -> tuple[int, float]:
        count, oldest = repo.queue_state(connection)
        lag = (repository.now(connection) - oldest).total_seconds() if oldest else 0.0
        return count, max(lag, 0.0)

    count, lag = _read(db, work)
    telemetry.instruments().ledger_unsealed.set(count)
    telemetry.instruments().ledger_sealing_lag.set(lag)
    return int(count)


def checkpoint_event(checkpoint: ledger.Checkpoint) -> outbox.OutboundEvent:
    return outbox.OutboundEvent(
        type="dev.holdfast.ledger.checkpoint.v1",
        source=SOURCE,
        subject=str(checkpoint.number),
        data=checkpoint.record(),
    )


# -- reads ------------------------------------------------------------------------------------


def _read(db: Database, work: Any) -> Any:
    def snapshot_work(connection: Connection) -> Any:
        repo.snapshot(connection, read_only=True)
        return work(connection)

    return db.run(snapshot_work)


def list_entries(
    db: Database,
    *,
    account_id: UUID | None,
    transfer_id: UUID | None,
    after: int,
    limit: int,
) -> list[ledger.LedgerEntry]:
    page: list[ledger.LedgerEntry] = _read(
        db,
        lambda c: repo.list_entries(
            c, account_id=account_id, transfer_id=transfer_id, after=after, limit=limit
        ),
    )
    return page


@dataclass(frozen=True, slots=True)
class Balance:
    account_id: UUID
    currency: str
    normal_balance: NormalBalance
    as_of: datetime
    debits_posted: int
    credits_posted: int
    entries: int

    @property
    def posted(self) -> int:
        if self.normal_balance is NormalBalance.CREDIT:
            return self.credits_posted - self.debits_posted
        return self.debits_posted - self.credits_posted


def balance(db: Database, account_id: UUID, as_of: datetime | None) -> Balance:
    """The posted balance at `as_of` (default: now): the sum of the account's entries posted
    by then, read from the running totals at the last seal point before it plus a bounded
    tail (domain.ledger_totals), so its cost does not grow with history."""

    def work(connection: Connection) -> Balance:
        at = as_of or repository.now(connection)
        terms = repo.account_terms(connection, account_id)
        if terms is None or terms.created_at > at:
            raise AccountNotFound(f"account {account_id} did not exist at {at.isoformat()}")
        found = totals_repo.account_as_of(connection, account_id, at)
        return Balance(
            account_id,
            terms.currency,
            terms.normal_balance,
            at,
            found.debits,
            found.credits,
            found.entries,
        )

    result: Balance = _read(db, work)
    return result


def trial_balance(db: Database, as_of: datetime | None) -> tuple[datetime, dict[str, Any]]:
    """Per currency, debits and credits posted by `as_of`, from the totals (as `balance`)."""

    def work(connection: Connection) -> tuple[datetime, dict[str, dict[str, int]]]:
        at = as_of or repository.now(connection)
        return at, totals_repo.trial_as_of(connection, at)

    at, totals = _read(db, work)
    return at, totals


def list_checkpoints(db: Database, *, after: int, limit: int) -> list[ledger.Checkpoint]:
    page: list[ledger.Checkpoint] = _read(
        db, lambda c: repo.list_checkpoints(c, after=after, limit=limit)
    )
    return page


def get_checkpoint(db: Database, number: int | None) -> ledger.Checkpoint:
    """Checkpoint `number`, or the latest when None."""

    def work(connection: Connection) -> ledger.Checkpoint | None:
        if number is None:
            return repo.latest_checkpoint(connection)
        return repo.get_checkpoint(connection, number)

    checkpoint: ledger.Checkpoint | None = _read(db, work)
    if checkpoint is None:
        raise CheckpointNotFound(
            "no checkpoint has been sealed yet" if number is None else f"no checkpoint {number}"
        )
    return checkpoint


def prove(db: Database, seq: int) -> dict[str, Any]:
    """The inclusion proof of entry `seq` in the checkpoint that sealed it (domain.proofs)."""
    found = _read(db, lambda c: repo.proof_material(c, seq))
    if found is None:
        raise EntryNotFound(f"no entry with seq {seq} has been sealed (yet)")
    entry, checkpoint, leaves = found
    if entry is None:
        raise InvariantViolation(f"seq {seq} is sealed but its entry is gone: holdfast audit check")
    require(
        len(leaves) == checkpoint.entry_count
        and checkpoint.first_seq <= seq <= checkpoint.last_seq,
        f"checkpoint {checkpoint.number} does not cover its sealed rows: holdfast audit check",
    )
    return proofs.inclusion_proof(entry, checkpoint, leaves)


def known_keys(db: Database) -> list[tuple[str, str, datetime]]:
    found: list[tuple[str, str, datetime]] = _read(db, repo.keys)
    return found


# -- export -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportRange:
    first: int
    last: int  # first - 1 when empty
    at: datetime


def export_range(db: Database, first: int | None, last: int | None) -> ExportRange:
    """Resolve `from`/`to` against the sealed checkpoints (to is clamped to the latest)."""

    def work(connection: Connection) -> ExportRange:
        latest = repo.latest_checkpoint(connection)
        newest = latest.number if latest else 0
        start = 1 if first is None else first
        end = newest if last is None else min(last, newest)
        if start < 1 or (last is not None and last < start):
            raise InvalidInput("from must be >= 1 and to >= from")
        return ExportRange(start, max(end, start - 1), repository.now(connection))

    found: ExportRange = _read(db, work)
    return found


def export_records(db: Database, span: ExportRange) -> Iterator[dict[str, Any]]:
    """The export as records, read page by page (sealed history does not change)."""
    yield ledger.export_header(span.first, span.last, span.at)
    checkpoints = entries = 0
    for checkpoint, rows in sealed_pages(db, span.first, span.last, repo.sealed_range):
        yield ledger.checkpoint_line(checkpoint, [row.leaf for row in rows])
        checkpoints += 1
        for entry in repo.entries_of(rows):
            yield ledger.entry_line(entry)
            entries += 1
    yield ledger.end_line(checkpoints, entries)


def export_lines(db: Database, span: ExportRange) -> Iterator[str]:
    """`export_records` as JSON Lines (without the newline), the same bytes as `json.dumps`
    of each record, read through `repo.export_rows` (the export's hot path)."""

    def line(record: dict[str, Any]) -> str:
        return json.dumps(record, separators=(",", ":"))

    yield line(ledger.export_header(span.first, span.last, span.at))
    checkpoints = entries = 0
    pages = sealed_pages(db, span.first, span.last, repo.export_rows, readers=EXPORT_READERS)
    with contextlib.closing(pages):  # a client gone mid-export stops the reads at once
        for checkpoint, rows in pages:
            yield line(ledger.checkpoint_line(checkpoint, [row.leaf for row in rows]))
            checkpoints += 1
            for row in rows:
                entry = repo.export_line(row)
                if entry is not None:
                    yield entry
                    entries += 1
    yield line(ledger.end_line(checkpoints, entries))


def sealed_pages(
    db: Database,
    first: int,
    last: int,
    read_range: Callable[[Connection, int, int], list[Row]],
    *,
    readers: int = 0,
) -> Generator[tuple[ledger.Checkpoint, list[Row]], None, None]:
    """Checkpoints first..last with their sealed rows (as `read_range` reads a seq range), a
    bounded page per transaction (sealed history never changes, so pages need not share one).
    `readers` > 0: that many threads read the next pages while this one's rows are used, each
    in its own transaction, handed over in order (the database works while this process
    writes); closing the generator lets the reads in flight finish and starts no more."""
    plans = _page_plans(db, first, last)

    def page(plan: list[ledger.Checkpoint]) -> list[tuple[ledger.Checkpoint, list[Row]]]:
        rows: list[tuple[ledger.Checkpoint, list[Row]]] = _read(
            db, functools.partial(_sealed_page, plan=plan, read_range=read_range)
        )
        return rows

    if readers <= 0:
        for plan in plans:
            yield from page(plan)
        return
    parent = otel_context.get_current()  # the readers' transactions are spans of this call

    def read(plan: list[ledger.Checkpoint]) -> list[tuple[ledger.Checkpoint, list[Row]]]:
        token = otel_context.attach(parent)
        try:
            return page(plan)
        finally:
            otel_context.detach(token)

    with ThreadPoolExecutor(readers, thread_name_prefix="holdfast-page-reader") as pool:
        in_flight: collections.deque[Future[list[tuple[ledger.Checkpoint, list[Row]]]]] = (
            collections.deque()
        )
        try:
            for plan in plans:
                in_flight.append(pool.submit(read, plan))
                if len(in_flight) > readers:
                    yield from in_flight.popleft().result()
            while in_flight:
                yield from in_flight.popleft().result()
        finally:
            for future in in_flight:
                future.cancel()


def _page_plans(db: Database, first: int, last: int) -> Iterator[list[ledger.Checkpoint]]:
    """Checkpoints first..last cut into pages of about `ledger_export_page_entries` entries
    (at least one checkpoint a page), from the checkpoints' own rows, a bounded list at a time."""
    number = first
    while number <= last:
        listed = _read(
            db,
            functools.partial(repo.list_checkpoints, after=number - 1, limit=limits.page_limit_max),
        )
        chosen = [checkpoint for checkpoint in listed if checkpoint.number <= last]
        if not chosen:
            return
        page: list[ledger.Checkpoint] = []
        for checkpoint in chosen:
            if (
                page
                and checkpoint.last_seq - page[0].first_seq >= limits.ledger_export_page_entries
            ):
                yield page
                page = []
            page.append(checkpoint)
        yield page
        number = chosen[-1].number + 1


def _sealed_page(
    connection: Connection,
    plan: list[ledger.Checkpoint],
    read_range: Callable[[Connection, int, int], list[Row]],
) -> list[tuple[ledger.Checkpoint, list[Row]]]:
    rows = read_range(connection, plan[0].first_seq, plan[-1].last_seq)
    # A checkpoint covers its seq range (rows come in seq order).
    grouped: list[tuple[ledger.Checkpoint, list[Row]]] = []
    index = 0
    for checkpoint in plan:
        start_index = index
        while index < len(rows) and rows[index].seq <= checkpoint.last_seq:
            index += 1
        grouped.append((checkpoint, rows[start_index:index]))
    return grouped


# -- the check of the database ----------------------------------------------------------------


@dataclass
class CheckReport:
    findings: list[str] = field(default_factory=list)
    summary: ledger.Summary | None = None

    @property
    def ok(self) -> bool:
        return not self.findings


def check(db: Database, keyring: ledger.Keyring, first: int | None = None) -> CheckReport:
    """Recompute checkpoints first..latest from the database and report every difference."""
    report = CheckReport()
    span = export_range(db, first, None)
    verifier = ledger.Verifier(keyring)
    try:
        verifier.feed(
            f"checkpoint {span.first}", ledger.export_header(span.first, span.last, span.at)
        )
        checkpoints = entries = 0
        for checkpoint, rows in sealed_pages(db, span.first, span.last, repo.sealed_range):
            where = f"checkpoint {checkpoint.number}"
            verifier.feed(where, ledger.checkpoint_line(checkpoint, [r.leaf for r in rows]))
            checkpoints += 1
            for row in rows:
                _check_row(report, row)
                if row.entry is not None:
                    verifier.feed(
                        f"seq {row.seq} (entry {row.entry_id})", ledger.entry_line(row.entry)
                    )
                    entries += 1
        verifier.feed("the end", ledger.end_line(checkpoints, entries))
        report.summary = verifier.finish("the end")
    except ledger.TamperDetected as error:
        report.findings.insert(0, str(error))
    _check_tables(db, report)
    if report.findings:
        telemetry.instruments().ledger_verification_failures.add(1)
    return report


def _check_row(report: CheckReport, row: repo.SealedRow) -> None:
    if row.entry is None:
        report.findings.append(
            f"seq {row.seq}: entry {row.entry_id} was deleted from ledger_entries"
        )
    elif (row.entry.account_id, row.entry.transfer_id) != (row.account_id, row.transfer_id):
        report.findings.append(
            f"seq {row.seq}: ledger_sequence names account {row.account_id} and transfer "
            f"{row.transfer_id}, the entry {row.entry.account_id} and {row.entry.transfer_id}"
        )
    if len(report.findings) > CHECK_FINDINGS_MAX:
        raise ledger.TamperDetected(f"seq {row.seq}", "too many differences: stopped")


def _check_tables(db: Database, report: CheckReport) -> None:
    def work(connection: Connection) -> list[str]:
        findings = []
        n = CHECK_FINDINGS_MAX
        for seq in repo.sealed_rows_outside_their_checkpoint(connection, n):
            findings.append(f"seq {seq} is in ledger_sequence but outside its checkpoint")
        for entry_id in repo.entries_neither_sealed_nor_queued(connection, n):
            findings.append(f"entry {entry_id} is neither sealed nor queued: inserted directly")
        for entry_id in repo.queued_but_sealed_or_missing(connection, n):
            findings.append(f"queued entry {entry_id} is already sealed or does not exist")
        for (
            account,
            debits,
            credits,
            ledger_debits,
            ledger_credits,
        ) in repo.account_counters_against_entries(connection, n):
            findings.append(
                f"account {account}: posted counters debits {debits} credits {credits}, "
                f"but its entries sum to debits {ledger_debits} credits {ledger_credits}"
            )
        findings.extend(totals_repo.point_findings(connection, n))
        findings.extend(totals_repo.totals_findings(connection, n))
        return findings

    found: list[str] = _read(db, work)
    report.findings.extend(found)
