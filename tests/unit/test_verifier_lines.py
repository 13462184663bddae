"""The verifier's fast path for entry lines (`Verifier.feed_line`) decides exactly as the
general path (I-JSON reading, then `feed`): same summary, or the same failure at the same line
with the same words, for intact exports and for lines changed in every way that matters."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from holdfast.domain import ijson, ledger
from tests.unit.test_ledger_proof import KEYRING, build_export

LINES = [json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in build_export()]
ENTRY = next(i for i, line in enumerate(LINES) if line.startswith(b'{"type":"entry"'))


def outcome(lines: list[bytes], fast: bool) -> str:
    verifier = ledger.Verifier(KEYRING)
    try:
        for number, raw in enumerate(lines, 1):
            if fast:
                verifier.feed_line(f"line {number}", raw)
            else:
                try:
                    record = ijson.loads(raw)
                except ijson.NotIJson as error:
                    raise ledger.TamperDetected(f"line {number}", f"not I-JSON: {error}") from error
                verifier.feed(f"line {number}", record)
        return verifier.finish(f"line {len(lines) + 1}").line()
    except ledger.TamperDetected as error:
        return f"FAILED {error}"


def test_an_intact_export_verifies_the_same():
    assert outcome(LINES, fast=True) == outcome(LINES, fast=False)
    assert outcome(LINES, fast=True).startswith("OK")


CHANGES = [
    (b'"seq":', b'"seq":0'),  # a leading zero: not JSON
    (b'"leg":0', b'"leg":16'),
    (b'"leg":0', b'"leg":00'),
    (b'"amount":', b'"amount":-'),
    (b'"currency":"EUR"', b'"currency":"eur"'),
    (b'"direction":"debit"', b'"direction":"Debit"'),
    (b'"posted_at":"2026', b'"posted_at":"2027'),
    (b"T", b" "),
    (b'","leg"', b'" ,"leg"'),
    (b'"type":"entry",', b'"type":"entry","type":"entry",'),
    (b"}\n", b',"extra":1}\n'),
    (b"}\n", b"}\r\n"),
    (b"}\n", b"}"),
    (b"-", b"A"),
]


@pytest.mark.parametrize(("old", "new"), CHANGES)
def test_a_changed_entry_line_fails_the_same(old, new):
    for index in (ENTRY, ENTRY + 1, len(LINES) - 2):
        lines = list(LINES)
        lines[index] = lines[index].replace(old, new, 1)
        assert outcome(lines, fast=True) == outcome(lines, fast=False), lines[index]


@given(
    index=st.integers(0, len(LINES) - 1),
    position=st.integers(0, 400),
    byte=st.binary(min_size=0, max_size=2),
    cut=st.integers(0, 2),
)
def test_any_small_change_fails_the_same(index, position, byte, cut):
    lines = list(LINES)
    line = lines[index]
    position = min(position, len(line))
    lines[index] = line[:position] + byte + line[position + cut :]
    assert outcome(lines, fast=True) == outcome(lines, fast=False)


@pytest.mark.parametrize(
    ("pattern", "value"),
    [
        (rb'"amount":[0-9]+', b'"amount":9007199254740992'),  # 2**53: too large
        (rb'"amount":[0-9]+', b'"amount":0'),
        (rb'"seq":[0-9]+', b'"seq":9999999999999999999'),  # beyond 2**63
        (rb'"posted_at":"[0-9]{4}-[0-9]{2}-[0-9]{2}', b'"posted_at":"2026-02-30'),
        (rb'"posted_at":"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}', b'"posted_at":"2026-01-31T24'),
    ],
)
def test_numbers_and_dates_out_of_range_fail_the_same(pattern, value):
    lines = list(LINES)
    lines[ENTRY] = re.sub(pattern, value, lines[ENTRY], count=1)
    assert lines[ENTRY] != LINES[ENTRY]
    assert outcome(lines, fast=True) == outcome(lines, fast=False)
    assert outcome(lines, fast=True).startswith("FAILED line")
