"""Running totals of the sealed ledger, so that a read "as of T" costs the same at any size.

A point-in-time read sums the entries with `posted_at <= T`. Sealing orders entries by seq,
which follows `posted_at` inside a checkpoint but not across checkpoints: a confirm that started
before a seal and committed after it is sealed later with an earlier `posted_at` ("late").
The sealer therefore cuts each checkpoint into blocks (contiguous seqs) and records at the end
of each block (a seal point):

    first_posted_at   the block's earliest posted_at
    posted_at_max     the largest posted_at of this block and every earlier one (P, monotone)
    lateness_max      max over blocks so far of P(previous block) - first_posted_at, or 0
    per account       cumulative debits, credits and entry count over all sealed seqs so far
    per currency      cumulative debits and credits (every currency seen so far)

A read as of T then takes (`services.ledger`, one SQL statement each):

    N = the last seal point with P <= T: every entry sealed up to N has posted_at <= T;
    K = the first seal point with P > T + lateness_max: an entry sealed in block M has
        P(M - 1) <= its posted_at + lateness_max, so one with posted_at <= T sealed after N
        lies in a block M with P(M - 1) <= T + lateness_max, that is M <= K;
    answer = totals at N + entries sealed in (N, K] with posted_at <= T
             + queued (unsealed) entries with posted_at <= T.

Each of these reads the same snapshot, where every visible entry is sealed or queued (never
both, never neither: `holdfast audit check` reports either), so the answer equals the plain sum
over the entries, exactly, whatever T. The tail is a block or two in steady state.

Pure: no I/O. Invariants: totals only grow; P never decreases; lateness_max never decreases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from holdfast import limits
from holdfast.domain.accounts import Direction
from holdfast.domain.errors import require
from holdfast.domain.ledger import LedgerEntry

NO_LATENESS = timedelta(0)


@dataclass(frozen=True, slots=True)
class Totals:
    """Cumulative sums of one account's (or currency's) sealed entries."""

    debits: int = 0
    credits: int = 0
    entries: int = 0

    def add(self, direction: Direction, amount: int) -> Totals:
        require(amount > 0, "an entry's amount is positive")
        if direction is Direction.DEBIT:
            return Totals(self.debits + amount, self.credits, self.entries + 1)
        return Totals(self.debits, self.credits + amount, self.entries + 1)


@dataclass(frozen=True, slots=True)
class SealPoint:
    first_seq: int
    last_seq: int
    checkpoint: int
    first_posted_at: datetime
    posted_at_max: datetime
    lateness_max: timedelta


@dataclass(frozen=True, slots=True)
class Recorded:
    """What one checkpoint adds: its seal points and the totals at each of them."""

    points: list[SealPoint]
    accounts: list[tuple[UUID, int, Totals]]  # (account, last_seq of the point, totals)
    currencies: list[tuple[int, str, Totals]]  # (last_seq of the point, currency, totals)


def blocks(entries: Sequence[LedgerEntry], size: int) -> list[Sequence[LedgerEntry]]:
    require(size >= 1, "a block holds at least one entry")
    return [entries[i : i + size] for i in range(0, len(entries), size)]


def record(
    previous: SealPoint | None,
    accounts: Mapping[UUID, Totals],
    currencies: Mapping[str, Totals],
    checkpoint: int,
    entries: Sequence[LedgerEntry],
    block_entries: int = limits.ledger_totals_block_entries,
) -> Recorded:
    """Seal points and totals for a checkpoint's entries (in seq order, continuing `previous`).

    `accounts` holds the totals at `previous` of (at least) every account the entries touch,
    `currencies` those of every currency seen so far; missing ones start from zero.
    """
    require(bool(entries), "a checkpoint holds entries")
    require(
        previous is None or entries[0].seq == previous.last_seq + 1,
        "seal points continue the previous one",
    )
    account_totals = dict(accounts)
    currency_totals = dict(currencies)
    points: list[SealPoint] = []
    account_rows: list[tuple[UUID, int, Totals]] = []
    currency_rows: list[tuple[int, str, Totals]] = []
    for block in blocks(entries, block_entries):
        first_posted_at = min(e.posted_at for e in block)
        block_max = max(e.posted_at for e in block)
        if previous is None:
            posted_at_max, lateness_max = block_max, NO_LATENESS
        else:
            posted_at_max = max(previous.posted_at_max, block_max)
            lateness_max = max(
                previous.lateness_max, previous.posted_at_max - first_posted_at, NO_LATENESS
            )
        point = SealPoint(
            block[0].seq, block[-1].seq, checkpoint, first_posted_at, posted_at_max, lateness_max
        )
        touched = _fold(block, account_totals, currency_totals)
        account_rows.extend((a, point.last_seq, account_totals[a]) for a in sorted(touched))
        currency_rows.extend(
            (point.last_seq, c, currency_totals[c]) for c in sorted(currency_totals)
        )
        points.append(point)
        previous = point
    return Recorded(points, account_rows, currency_rows)


def _fold(
    block: Iterable[LedgerEntry],
    accounts: dict[UUID, Totals],
    currencies: dict[str, Totals],
) -> set[UUID]:
    touched: set[UUID] = set()
    for entry in block:
        accounts[entry.account_id] = accounts.get(entry.account_id, Totals()).add(
            entry.direction, entry.amount
        )
        currencies[entry.currency] = currencies.get(entry.currency, Totals()).add(
            entry.direction, entry.amount
        )
        touched.add(entry.account_id)
    return touched


def sum_as_of(
    entries: Iterable[LedgerEntry], as_of: datetime, account_id: UUID | None = None
) -> dict[str, dict[str, int]]:
    """The definition the totals must reproduce: per currency and direction, the sum of the
    entries (of `account_id`, if given) with posted_at <= as_of (directions without entries
    left out). Tests compare the database's answers with it."""
    found: dict[str, dict[str, int]] = {}
    for entry in entries:
        if entry.posted_at <= as_of and account_id in (None, entry.account_id):
            sides = found.setdefault(entry.currency, {})
            sides[str(entry.direction)] = sides.get(str(entry.direction), 0) + entry.amount
    return found
