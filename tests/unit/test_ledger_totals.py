"""Seal points and running totals (domain.ledger_totals), checked against plain sums; and the
verifier's and the export's fast encodings, checked against the general ones. Pure."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from holdfast.domain import ledger
from holdfast.domain.accounts import Direction
from holdfast.domain.ledger import LedgerEntry
from holdfast.domain.ledger_totals import NO_LATENESS, SealPoint, Totals, record

START = datetime(2026, 1, 31, 12, tzinfo=UTC)
ACCOUNTS = [uuid.UUID(int=i + 1) for i in range(3)]


def entries_of(spec: list[tuple[int, int, int, str]], first_seq: int = 1) -> list[LedgerEntry]:
    """(account index, amount, posted offset in s, currency) -> debit/credit entries in seq
    order, each spec one transfer: a debit of the account and a credit of the next one."""
    found = []
    for account, amount, offset, currency in spec:
        transfer = uuid.uuid4()
        for direction, index in ((Direction.DEBIT, account), (Direction.CREDIT, account + 1)):
            found.append(
                LedgerEntry(
                    seq=first_seq + len(found),
                    transfer_id=transfer,
                    leg=0,
                    direction=direction,
                    account_id=ACCOUNTS[index % 3],
                    amount=amount,
                    currency=currency,
                    posted_at=START + timedelta(seconds=offset),
                )
            )
    return found


def test_blocks_carry_the_running_maximum_and_the_lateness():
    first = record(None, {}, {}, 1, entries_of([(0, 5, 10, "EUR"), (1, 7, 20, "EUR")]), 2)
    assert [(p.first_seq, p.last_seq) for p in first.points] == [(1, 2), (3, 4)]
    assert first.points[-1].posted_at_max == START + timedelta(seconds=20)
    assert first.points[-1].lateness_max == NO_LATENESS
    late = entries_of([(2, 3, 5, "USD")], first_seq=5)  # posted 15 s before the last sealed
    second = record(first.points[-1], {}, {}, 2, late, 2)
    assert second.points[0].lateness_max == timedelta(seconds=15)
    assert second.points[0].posted_at_max == START + timedelta(seconds=20)


SPECS = st.lists(
    st.tuples(st.integers(0, 2), st.integers(1, 10**6), st.integers(0, 100), st.sampled_from("EU")),
    min_size=1,
    max_size=40,
)


@given(specs=st.lists(SPECS, min_size=1, max_size=5), size=st.integers(1, 7))
def test_totals_at_each_point_are_the_sums_of_everything_sealed_up_to_it(specs, size):
    previous: SealPoint | None = None
    accounts: dict[uuid.UUID, Totals] = {}
    currencies: dict[str, Totals] = {}
    sealed: list[LedgerEntry] = []
    for number, spec in enumerate(specs, 1):
        entries = entries_of(spec, first_seq=len(sealed) + 1)
        recorded = record(previous, accounts, currencies, number, entries, size)
        sealed.extend(entries)
        points = {p.last_seq: p for p in recorded.points}
        for account, last_seq, totals in recorded.accounts:
            upto = [e for e in sealed if e.seq <= last_seq and e.account_id == account]
            assert totals == Totals(
                sum(e.amount for e in upto if e.direction is Direction.DEBIT),
                sum(e.amount for e in upto if e.direction is Direction.CREDIT),
                len(upto),
            )
            accounts[account] = totals
        for last_seq, currency, totals in recorded.currencies:
            upto = [e for e in sealed if e.seq <= last_seq and e.currency == currency]
            assert (totals.debits, totals.credits) == (
                sum(e.amount for e in upto if e.direction is Direction.DEBIT),
                sum(e.amount for e in upto if e.direction is Direction.CREDIT),
            )
            currencies[currency] = totals
        for point in points.values():
            covered = [e for e in sealed if e.seq <= point.last_seq]
            block = [e for e in covered if e.seq >= point.first_seq]
            assert point.posted_at_max == max(e.posted_at for e in covered)
            assert point.first_posted_at == min(e.posted_at for e in block)
            assert point.checkpoint == number
        previous = recorded.points[-1]


@given(
    seq=st.integers(1, 2**62),
    leg=st.integers(0, 15),
    amount=st.integers(1, 2**53 - 1),
    currency=st.from_regex(r"[A-Z]{3}", fullmatch=True),
    direction=st.sampled_from(["debit", "credit"]),
    micros=st.integers(0, 10**15),
)
def test_the_verifiers_leaf_is_the_canonical_leaf(seq, leg, amount, currency, direction, micros):
    """The verifier writes a checked entry's JCS out directly: it is byte for byte leaf_hash's."""
    record = {
        "seq": seq,
        "transfer_id": str(uuid.uuid4()),
        "leg": leg,
        "direction": direction,
        "account_id": str(uuid.uuid4()),
        "amount": amount,
        "currency": currency,
        "posted_at": ledger.format_time(START + timedelta(microseconds=micros)),
    }
    checked = ledger._entry_fields("here", record)
    assert ledger._checked_leaf_hash(checked) == ledger.leaf_hash(record)


def test_times_parse_as_before_and_refuse_what_they_refused():
    assert ledger.parse_time("2026-02-28T23:59:59.999999Z") == datetime(
        2026, 2, 28, 23, 59, 59, 999999, tzinfo=UTC
    )
    for bad in (
        "2026-02-30T00:00:00.000000Z",
        "2026-01-31T24:00:00.000000Z",
        "2026-01-31T23:59:60.000000Z",
        "2026-01-31T12:00:00.000000Z\n",
        "2026-01-31 12:00:00.000000Z",
        "0000-01-31T12:00:00.000000Z",
    ):
        with pytest.raises(ValueError):
            ledger.parse_time(bad)


@given(
    seq=st.integers(1, 2**62),
    leg=st.integers(0, 15),
    amount=st.integers(1, 2**53 - 1),
    currency=st.one_of(st.from_regex(r"[A-Z]{3}", fullmatch=True), st.text(max_size=4)),
    direction=st.sampled_from(Direction),
    micros=st.integers(-(10**15), 10**15),
    offset_minutes=st.integers(-900, 900),
)
def test_the_exports_entry_line_is_json_dumps(
    seq, leg, amount, currency, direction, micros, offset_minutes
):
    """The export writes entry lines out directly: byte for byte json.dumps of entry_line."""
    zone = timezone(timedelta(minutes=offset_minutes))
    entry = LedgerEntry(
        seq=seq,
        transfer_id=uuid.uuid4(),
        leg=leg,
        direction=direction,
        account_id=uuid.uuid4(),
        amount=amount,
        currency=currency,
        posted_at=(START + timedelta(microseconds=micros)).astimezone(zone),
    )
    expected = json.dumps(ledger.entry_line(entry), separators=(",", ":"))
    assert ledger.entry_json(entry) == expected
    assert ledger.format_time(entry.posted_at) == entry.posted_at.astimezone(UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )
