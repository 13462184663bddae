"""The ledger's proof without a database: encodings, Merkle roots, sealing, signatures, and the
verifier of an export against every kind of tampering."""

from __future__ import annotations

import copy
import hashlib
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from holdfast import limits
from holdfast.adapters.signing import Ed25519Keyring, Ed25519Signer
from holdfast.domain import ledger
from holdfast.domain.accounts import Direction
from holdfast.domain.errors import InvariantViolation
from holdfast.domain.transfers import Entry, entry_id

T0 = datetime(2026, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)
SIGNER = Ed25519Signer(Ed25519PrivateKey.generate())
KEYRING = Ed25519Keyring([SIGNER.public_key])


def rfc6962(leaves: list[bytes]) -> bytes:
    """The Merkle tree hash as RFC 6962 §2.1 defines it (recursive split at a power of two)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + rfc6962(leaves[:k]) + rfc6962(leaves[k:])).digest()


@pytest.mark.parametrize("n", range(34))
def test_merkle_root_is_rfc6962(n):
    leaves = [hashlib.sha256(bytes([i])).digest() for i in range(n)]
    assert ledger.merkle_root(leaves) == rfc6962(leaves)


GOLDEN_ENTRY = {
    "seq": 7,
    "transfer_id": "0b9e6c8e-4f44-4d4b-9b8a-3c1f2f0e5a11",
    "leg": 0,
    "direction": "debit",
    "account_id": "5d2f3e4a-1b2c-4d5e-8f90-a1b2c3d4e5f6",
    "amount": 1250,
    "currency": "EUR",
    "posted_at": "2026-01-31T12:00:00.123456Z",
}


def test_the_v1_encodings_are_frozen():
    """Auditors' own verifiers depend on these bytes: changing them is a new format version."""
    assert ledger.canonical(GOLDEN_ENTRY) == (
        b'{"account_id":"5d2f3e4a-1b2c-4d5e-8f90-a1b2c3d4e5f6","amount":1250,"currency":"EUR",'
        b'"direction":"debit","leg":0,"posted_at":"2026-01-31T12:00:00.123456Z","seq":7,'
        b'"transfer_id":"0b9e6c8e-4f44-4d4b-9b8a-3c1f2f0e5a11"}'
    )
    leaf = ledger.leaf_hash(GOLDEN_ENTRY)
    assert leaf == hashlib.sha256(b"\x00" + ledger.canonical(GOLDEN_ENTRY)).digest()
    body = {
        "number": 3,
        "first_seq": 7,
        "last_seq": 7,
        "entry_count": 1,
        "entries_root": leaf.hex(),
        "previous_digest": ledger.GENESIS_DIGEST,
    }
    assert (
        ledger.checkpoint_digest(body)
        == hashlib.sha256(b"\x02" + ledger.canonical(body)).hexdigest()
    )
    assert ledger.signing_message({**body, "digest": "d", "key_id": "k", "created_at": "c"}) == (
        b"holdfast-ledger-checkpoint-v1\n"
        + ledger.canonical({**body, "digest": "d", "key_id": "k", "created_at": "c"})
    )


def test_times_have_one_rendering():
    assert ledger.format_time(T0) == "2026-01-31T12:00:00.123456Z"
    other_zone = T0.astimezone(timezone(timedelta(hours=-5)))
    assert ledger.format_time(other_zone) == "2026-01-31T12:00:00.123456Z"
    assert ledger.parse_time("2026-01-31T12:00:00.123456Z") == T0
    for text in (
        "2026-01-31T12:00:00Z",
        "2026-01-31T12:00:00.123456+00:00",
        "2026-02-30T00:00:00.000000Z",
    ):
        with pytest.raises(ValueError):
            ledger.parse_time(text)
    with pytest.raises(InvariantViolation):
        ledger.format_time(datetime(2026, 1, 1))


def transfer(
    legs: list[tuple[uuid.UUID, uuid.UUID, int]], at: datetime, currency: str = "EUR"
) -> list[Entry]:
    transfer_id = uuid.uuid4()
    entries = []
    for index, (debit, credit, amount) in enumerate(legs):
        for direction, account in ((Direction.DEBIT, debit), (Direction.CREDIT, credit)):
            entries.append(
                Entry(
                    entry_id(transfer_id, index, direction),
                    transfer_id,
                    index,
                    direction,
                    account,
                    amount,
                    currency,
                    at,
                )
            )
    return entries


def accounts(n: int) -> list[uuid.UUID]:
    return [uuid.uuid4() for _ in range(n)]


def test_seal_orders_numbers_chains_and_signs():
    a, b, c = accounts(3)
    late = transfer([(a, b, 5)], T0)
    early = transfer([(b, c, 2), (c, a, 1)], T0 - timedelta(seconds=1))
    first = ledger.seal(None, late + early, created_at=T0, signer=SIGNER)
    assert [(e.seq, e.transfer_id, e.leg, e.direction) for e in first.entries] == [
        (1, early[0].transfer_id, 0, Direction.DEBIT),
        (2, early[0].transfer_id, 0, Direction.CREDIT),
        (3, early[0].transfer_id, 1, Direction.DEBIT),
        (4, early[0].transfer_id, 1, Direction.CREDIT),
        (5, late[0].transfer_id, 0, Direction.DEBIT),
        (6, late[0].transfer_id, 0, Direction.CREDIT),
    ]
    cp = first.checkpoint
    assert (cp.number, cp.first_seq, cp.last_seq, cp.entry_count) == (1, 1, 6, 6)
    assert cp.previous_digest == ledger.GENESIS_DIGEST
    assert cp.entries_root == ledger.merkle_root(first.leaves).hex()
    record = cp.record()
    assert cp.digest == ledger.checkpoint_digest(record)
    assert KEYRING.verify(cp.key_id, ledger.signing_message(record), bytes.fromhex(cp.signature))
    second = ledger.seal(cp, transfer([(a, c, 9)], T0), created_at=T0, signer=SIGNER)
    assert (second.checkpoint.number, second.checkpoint.first_seq) == (2, 7)
    assert second.checkpoint.previous_digest == cp.digest


def test_seal_refuses_what_is_not_double_entry():
    a, b = accounts(2)
    whole = transfer([(a, b, 5)], T0)
    with pytest.raises(InvariantViolation):
        ledger.seal(None, whole[:1], created_at=T0, signer=SIGNER)  # half a transfer
    with pytest.raises(InvariantViolation):
        ledger.seal(None, [], created_at=T0, signer=SIGNER)
    with pytest.raises(InvariantViolation):
        ledger.seal(None, [whole[0], replace(whole[1], amount=6)], created_at=T0, signer=SIGNER)
    with pytest.raises(InvariantViolation):
        ledger.seal(
            None, [whole[0], replace(whole[1], currency="USD")], created_at=T0, signer=SIGNER
        )
    with pytest.raises(InvariantViolation):
        ledger.seal(None, [whole[0], replace(whole[1], account_id=a)], created_at=T0, signer=SIGNER)


# -- the verifier on exports built in memory ----------------------------------------------------


def build_export(checkpoints: int = 4, transfers_each: int = 3) -> list[dict[str, Any]]:
    a, b, c, d = accounts(4)
    lines: list[dict[str, Any]] = []
    previous = None
    body: list[dict[str, Any]] = []
    entries = 0
    for n in range(checkpoints):
        batch = []
        for k in range(transfers_each):
            at = T0 + timedelta(seconds=n * 10 + k)
            batch += transfer([(a, b, 100 + k), (c, d, 7)] if k % 2 else [(b, c, 3 + n)], at)
        sealed = ledger.seal(previous, batch, created_at=T0 + timedelta(minutes=n), signer=SIGNER)
        body.append(ledger.checkpoint_line(sealed.checkpoint, sealed.leaves))
        body += [ledger.entry_line(e) for e in sealed.entries]
        entries += len(sealed.entries)
        previous = sealed.checkpoint
    lines.append(ledger.export_header(1, checkpoints, T0 + timedelta(hours=1)))
    lines += body
    lines.append(ledger.end_line(checkpoints, entries))
    return lines


def run(lines: list[dict[str, Any]]) -> ledger.Summary:
    verifier = ledger.Verifier(KEYRING)
    for number, record in enumerate(lines, 1):
        verifier.feed(f"line {number}", record)
    return verifier.finish(f"line {len(lines) + 1}")


def test_a_built_export_verifies():
    summary = run(build_export())
    assert (summary.checkpoints, summary.first_checkpoint, summary.last_checkpoint) == (4, 1, 4)
    assert summary.entries == summary.last_seq == 4 * (2 + 4 + 2)
    assert summary.key_ids == (SIGNER.key_id,)
    assert summary.line().startswith("OK: 32 entries of 12 transfers in checkpoints 1..4")


def test_an_empty_export_verifies():
    lines = [ledger.export_header(1, 0, T0), ledger.end_line(0, 0)]
    assert run(lines).line() == "OK: the export holds no checkpoint and no entry"


def where_and_what(lines):
    with pytest.raises(ledger.TamperDetected) as detected:
        run(lines)
    return detected.value.where, detected.value.message


def test_a_transfer_sealed_twice_is_caught():
    a, b = accounts(2)
    twice = transfer([(a, b, 5)], T0)
    first = ledger.seal(None, twice, created_at=T0, signer=SIGNER)
    second = ledger.seal(first.checkpoint, twice, created_at=T0, signer=SIGNER)
    lines = [ledger.export_header(1, 2, T0)]
    for sealed in (first, second):
        lines.append(ledger.checkpoint_line(sealed.checkpoint, sealed.leaves))
        lines += [ledger.entry_line(e) for e in sealed.entries]
    lines.append(ledger.end_line(2, 4))
    assert where_and_what(lines) == (
        "line 6",
        f"transfer {twice[0].transfer_id} already appeared in an earlier checkpoint",
    )


def test_an_unbalanced_but_signed_leg_is_caught():
    """A signer bug, not tampering: the verifier still refuses a leg that does not balance."""
    a, b = accounts(2)
    entries = transfer([(a, b, 5)], T0)
    sealed = ledger.seal(None, entries, created_at=T0, signer=SIGNER)
    lopsided = [
        ledger.entry_line(sealed.entries[0]),
        {**ledger.entry_line(sealed.entries[1]), "amount": 6},
    ]
    leaves = [ledger.leaf_hash(r) for r in lopsided]
    record = {**sealed.checkpoint.record(), "entries_root": ledger.merkle_root(leaves).hex()}
    record["digest"] = ledger.checkpoint_digest(record)
    record["signature"] = SIGNER.sign(ledger.signing_message(record)).hex()
    lines = [
        ledger.export_header(1, 1, T0),
        {"type": "checkpoint", **record, "leaves": [x.hex() for x in leaves]},
        *lopsided,
        ledger.end_line(1, 2),
    ]
    where, what = where_and_what(lines)
    assert where == "line 3"
    assert "leg 0 does not balance: debit 5 EUR (line 3) against credit 6 EUR (line 4)" in what


def test_records_out_of_place_are_named():
    lines = build_export()
    assert where_and_what(lines[1:])[0] == "line 1"  # no header
    assert where_and_what([*lines, lines[-1]]) == (
        f"line {len(lines) + 1}",
        "a record after the end record",
    )
    assert where_and_what([lines[0], lines[0]]) == ("line 2", "a second export header")
    assert where_and_what([lines[0], {"type": "note"}]) == ("line 2", "unknown record type 'note'")
    extra = copy.deepcopy(lines)
    extra[2]["memo"] = "hi"
    assert where_and_what(extra)[0] == "line 3"
    short_header = copy.deepcopy(lines)
    short_header[0]["to"] = 3
    assert where_and_what(short_header)[1].startswith("checkpoint 4 is past the export's last")
    long_header = copy.deepcopy(lines)
    long_header[0]["to"] = 5
    assert "checkpoint 5..5 is missing" in where_and_what(long_header)[1]
    counts = copy.deepcopy(lines)
    counts[-1]["entries"] += 1
    assert where_and_what(counts)[1].startswith("the end record counts")


# Every field of every record, except the header's informational exported_at, is covered.
FIELDS = [
    (index, key)
    for index, record in enumerate(build_export(checkpoints=2, transfers_each=2))
    for key in record
    if key != "type" and not (record["type"] == "export" and key == "exported_at")
]


def mutate(value: Any, choice: int) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + (1 if choice % 2 else -1)
    if isinstance(value, list):
        flipped = list(value)
        i = choice % len(flipped)
        flipped[i] = ("0" if flipped[i][0] != "0" else "1") + flipped[i][1:]
        return flipped
    text = str(value)
    i = choice % len(text)
    replacement = "0" if text[i] != "0" else "1"
    return text[:i] + replacement + text[i + 1 :]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FIELDS), st.integers(min_value=0, max_value=10_000))
def test_any_single_change_is_detected(field, choice):
    lines = build_export(checkpoints=2, transfers_each=2)
    index, key = field
    lines[index][key] = mutate(lines[index][key], choice)
    with pytest.raises(ledger.TamperDetected) as detected:
        run(lines)
    # Named at the changed record, or where its absence or effect is first seen.
    assert int(detected.value.where.split()[1]) >= index + 1


def test_too_many_entries_cannot_be_sealed():
    a, b = accounts(2)
    entries = []
    while len(entries) <= limits.ledger_checkpoint_entries_max:
        entries += transfer([(a, b, 1)], T0)
    with pytest.raises(InvariantViolation):
        ledger.seal(None, entries, created_at=T0, signer=SIGNER)


def test_key_ids_come_from_the_public_key():
    other = Ed25519Signer(Ed25519PrivateKey.generate())
    assert SIGNER.key_id != other.key_id
    assert len(SIGNER.key_id) == 32
    assert not KEYRING.knows(other.key_id)
    message = b"m"
    assert not KEYRING.verify(SIGNER.key_id, message, other.sign(message))
    assert KEYRING.verify(SIGNER.key_id, message, SIGNER.sign(message))
