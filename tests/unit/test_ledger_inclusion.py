"""Single-entry proofs without a database: inclusion proofs of every entry, any changed byte
refused, checkpoint extensions for holders of an old digest, the verifier's pinned digests,
and the strict I-JSON reading every auditor's tool uses."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from holdfast.adapters.signing import Ed25519Keyring, Ed25519Signer
from holdfast.domain import ijson, ledger, merkle, proofs
from tests.unit.test_ledger_proof import (
    GOLDEN_ENTRY,
    KEYRING,
    SIGNER,
    T0,
    accounts,
    build_export,
    transfer,
)


def sealed_chain(sizes: list[int]) -> list[ledger.Sealed]:
    """Checkpoints of the given numbers of single-leg transfers (2 entries each)."""
    a, b, c = accounts(3)
    chain: list[ledger.Sealed] = []
    previous = None
    for n, transfers in enumerate(sizes):
        batch = []
        for k in range(transfers):
            legs = [(b, c, 5), (c, a, 7)] if k % 3 == 1 else [(a, b, 10 + k)]
            batch += transfer(legs, T0 + timedelta(seconds=n * 100 + k))
        sealed = ledger.seal(previous, batch, created_at=T0 + timedelta(minutes=n), signer=SIGNER)
        chain.append(sealed)
        previous = sealed.checkpoint
    return chain


def proof_of(sealed: ledger.Sealed, index: int) -> dict[str, Any]:
    """The proof as the API serves it: built, then through JSON and back."""
    proof = proofs.inclusion_proof(sealed.entries[index], sealed.checkpoint, sealed.leaves)
    return ijson.loads(json.dumps(proof, separators=(",", ":")))


def test_every_entry_of_every_checkpoint_is_proven():
    chain = sealed_chain([1, 2, 5, 6, 11])
    assert [s.checkpoint.entry_count for s in chain] == [2, 6, 14, 16, 30]
    for sealed in chain:
        for index, entry in enumerate(sealed.entries):
            proven = proofs.check_inclusion(proof_of(sealed, index), KEYRING)
            assert proven.leaf_index == index == entry.seq - sealed.checkpoint.first_seq
            assert proven.entry == entry.record()
            assert proven.line().startswith(
                f"OK: entry seq {entry.seq} (transfer {entry.transfer_id} leg {entry.leg}, "
            )
            assert f"of checkpoint {sealed.checkpoint.number} " in proven.line()


def text_of(proof: dict[str, Any]) -> str:
    return json.dumps(proof, separators=(",", ":"))


def changed(char: str) -> str:
    """Another character of the same kind, so that most changes still parse."""
    if char.isdigit():
        return "1" if char == "0" else "0"
    if char in "abcdef":
        return "0"
    if char.isalpha():
        return "a" if char != "a" else "b"
    return "x"


def refused(text: str) -> bool:
    try:
        proofs.check_inclusion(ijson.loads(text), KEYRING)
    except (ijson.NotIJson, ledger.TamperDetected):
        return True
    return False


def test_a_proof_with_any_byte_changed_is_refused():
    (sealed,) = sealed_chain([5])
    for index in (0, 3, sealed.checkpoint.entry_count - 1):
        text = text_of(proof_of(sealed, index))
        assert not refused(text)
        kept = [
            i for i in range(len(text)) if not refused(text[:i] + changed(text[i]) + text[i + 1 :])
        ]
        assert kept == [], [text[max(0, i - 20) : i + 20] for i in kept]


PROOF_TAMPERING = {
    "entry amount": (lambda p: p["entry"].update(amount=p["entry"]["amount"] + 1), "the proof"),
    "entry account in upper case": (
        lambda p: p["entry"].update(account_id=p["entry"]["account_id"].upper()),
        "entry",
    ),
    "entry seq": (lambda p: p["entry"].update(seq=p["entry"]["seq"] + 1), "leaf_index"),
    "entry direction": (
        lambda p: p["entry"].update(
            direction="credit" if p["entry"]["direction"] == "debit" else "debit"
        ),
        "the proof",
    ),
    "leaf index": (lambda p: p.update(leaf_index=p["leaf_index"] + 1), "leaf_index"),
    "leaf index and seq together": (
        lambda p: (
            p.update(leaf_index=p["leaf_index"] + 1),
            p["entry"].update(seq=p["entry"]["seq"] + 1),
        ),
        "the proof",
    ),
    "a path hash": (
        lambda p: p["audit_path"].__setitem__(0, "0" * 64),
        "the proof",
    ),
    "a path hash dropped": (lambda p: p["audit_path"].pop(), "audit_path"),
    "a path hash added": (lambda p: p["audit_path"].append("0" * 64), "audit_path"),
    "path in upper case": (
        lambda p: p["audit_path"].__setitem__(0, p["audit_path"][0].upper()),
        "audit_path",
    ),
    "entries_root": (
        lambda p: p["checkpoint"].update(entries_root="1" * 64),
        "checkpoint",
    ),
    "checkpoint signature": (
        lambda p: p["checkpoint"].update(signature="0" * 128),
        "checkpoint",
    ),
    "checkpoint number": (
        lambda p: p["checkpoint"].update(number=p["checkpoint"]["number"] + 1),
        "checkpoint",
    ),
    "checkpoint created_at": (
        lambda p: p["checkpoint"].update(created_at="2026-01-31T12:00:00.000000Z"),
        "checkpoint",
    ),
    "an unknown member": (lambda p: p.update(note="hi"), "the proof"),
    "an unknown entry member": (lambda p: p["entry"].update(type="entry"), "entry"),
    "checkpoint with leaves": (lambda p: p["checkpoint"].update(leaves=[]), "checkpoint"),
    "leaf index as text": (lambda p: p.update(leaf_index=str(p["leaf_index"])), "leaf_index"),
}


@pytest.mark.parametrize("kind", sorted(PROOF_TAMPERING))
def test_each_kind_of_changed_proof_is_named(kind):
    (sealed,) = sealed_chain([6])
    proof = proof_of(sealed, 5)
    tamper, where = PROOF_TAMPERING[kind]
    tamper(proof)
    with pytest.raises(ledger.TamperDetected) as detected:
        proofs.check_inclusion(proof, KEYRING)
    assert detected.value.where == where, detected.value


def test_a_proof_from_an_untrusted_key_is_refused():
    (sealed,) = sealed_chain([2])
    stranger = Ed25519Keyring([Ed25519PrivateKey.generate().public_key()])
    with pytest.raises(ledger.TamperDetected, match="not among the trusted public keys"):
        proofs.check_inclusion(proof_of(sealed, 0), stranger)


def test_a_single_entry_checkpoint_has_an_empty_path():
    """The seal refuses half a transfer, so build the one-leaf record by hand."""
    (sealed,) = sealed_chain([1])
    entry = sealed.entries[0]
    record = {**sealed.checkpoint.record(), "entry_count": 1, "last_seq": entry.seq}
    record["entries_root"] = entry.leaf().hex()
    record["digest"] = ledger.checkpoint_digest(record)
    record["signature"] = SIGNER.sign(ledger.signing_message(record)).hex()
    proof = {"entry": entry.record(), "checkpoint": record, "leaf_index": 0, "audit_path": []}
    assert proofs.check_inclusion(proof, KEYRING).leaf_index == 0
    with pytest.raises(ledger.TamperDetected):
        proofs.check_inclusion({**proof, "audit_path": ["0" * 64]}, KEYRING)


# -- extension: a later checkpoint extends the one an auditor holds ----------------------------


def records(chain: list[ledger.Sealed]) -> list[dict[str, Any]]:
    return [s.checkpoint.record() for s in chain]


def test_later_checkpoints_extend_a_held_one():
    chain = sealed_chain([1, 2, 1, 3, 2])
    held = chain[1].checkpoint  # checkpoint 2
    after = records(chain[2:])
    assert proofs.check_extension(held.digest, after, KEYRING)["number"] == 5
    assert proofs.check_extension(held.digest, records(chain[1:]), KEYRING)["number"] == 5
    assert proofs.check_extension(held.digest, after[:1], KEYRING)["number"] == 3
    everything = records(chain)
    assert proofs.check_extension(ledger.GENESIS_DIGEST, everything, KEYRING)["number"] == 5


def extension_failure(held: str, given: list[dict[str, Any]]) -> tuple[str, str]:
    with pytest.raises(ledger.TamperDetected) as detected:
        proofs.check_extension(held, given, KEYRING)
    return detected.value.where, detected.value.message


def test_what_does_not_extend_is_named():
    chain = sealed_chain([1, 2, 1, 3, 2])
    held = chain[1].checkpoint.digest
    after = records(chain[2:])
    assert "neither has the held digest" in extension_failure(held, after[1:])[1]  # a gap
    assert extension_failure("ab" * 32, after)[0] == "checkpoint record 1"  # another history
    assert extension_failure(held, [after[0], after[2]]) == (
        "checkpoint record 2",
        "checkpoint 5 does not follow checkpoint 3",
    )
    assert extension_failure(held, [after[1], after[0]])[0] == "checkpoint record 1"
    forged = [dict(r) for r in after]
    forged[1]["previous_digest"] = "cd" * 32
    assert "digest does not match its fields" in extension_failure(held, forged)[1]
    resigned = [dict(r) for r in after]  # a forger with a key nobody trusts
    resigned[2]["signature"] = "00" * 64
    assert extension_failure(held, resigned) == (
        "checkpoint record 3",
        "checkpoint 5: the signature does not verify (forged or changed)",
    )
    assert extension_failure(held, [])[1].startswith("none given")


# -- the verifier's pins: the digest it must end on, the held digest it must extend --------------


def run(lines: list[dict[str, Any]], **pins: str) -> ledger.Summary:
    verifier = ledger.Verifier(KEYRING, **pins)
    for number, record in enumerate(lines, 1):
        verifier.feed(f"line {number}", record)
    return verifier.finish(f"line {len(lines) + 1}")


def shortened(lines: list[dict[str, Any]], checkpoints: int) -> list[dict[str, Any]]:
    """The export cut after a complete checkpoint, header and end record rewritten to match."""
    kept, seen, entries = [], 0, 0
    for record in lines[1:-1]:
        if record["type"] == "checkpoint":
            seen += 1
            if seen > checkpoints:
                break
        entries += record["type"] == "entry"
        kept.append(record)
    header = {**lines[0], "to": checkpoints}
    return [header, *kept, ledger.end_line(checkpoints, entries)]


def test_a_shortened_export_fails_against_the_expected_digest():
    lines = build_export(checkpoints=4)
    last = [r for r in lines if r["type"] == "checkpoint"][-1]["digest"]
    summary = run(lines, expect_digest=last)
    assert summary.line().endswith("; it ends on the expected digest")
    short = shortened(lines, 3)
    assert run(short).last_checkpoint == 3  # alone, a shorter export verifies
    with pytest.raises(ledger.TamperDetected) as detected:
        run(short, expect_digest=last)
    assert detected.value.where == f"line {len(short)}"
    assert detected.value.message.startswith("the export ends on checkpoint 3 with digest ")
    assert f"not on the expected digest {last}: a shortened export" in detected.value.message


def test_an_export_must_extend_the_held_digest():
    lines = build_export(checkpoints=4)
    checkpoints = [r for r in lines if r["type"] == "checkpoint"]
    assert run(lines, extends=checkpoints[1]["digest"]).extends == 2
    assert "it extends the held checkpoint 0" in run(lines, extends=ledger.GENESIS_DIGEST).line()
    # Only what is new since checkpoint 2: checkpoints 3 and 4.
    start = lines.index(checkpoints[2])
    newer = [{**lines[0], "from": 3}, *lines[start:]]
    newer[-1] = ledger.end_line(2, sum(1 for r in lines[start:] if r["type"] == "entry"))
    assert run(newer, extends=checkpoints[1]["digest"]).extends == 2
    with pytest.raises(ledger.TamperDetected) as detected:
        run(newer, extends=checkpoints[0]["digest"])
    assert detected.value.where == f"line {len(newer)}"
    assert "does not extend the checkpoint with digest" in detected.value.message


# -- I-JSON -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"amount":1,"amount":2}', "appears twice"),
        ('{"a":{"digest":"x","digest":"y"}}', "appears twice"),
        ('[{"k":1},{"k":1,"k":1}]', "appears twice"),
        ('{"amount":1,"amo\\u0075nt":2}', "appears twice"),
        ('{"a":"\\ud800"}', "unpaired surrogate"),
        ('{"\\udc00":1}', "unpaired surrogate"),
        ('{"a":9007199254740992}', "beyond 2**53 - 1"),
        ('{"a":-9007199254740992}', "beyond 2**53 - 1"),
        ('{"a":NaN}', "NaN is not JSON"),
        ('{"a":-Infinity}', "-Infinity is not JSON"),
        ('{"a":1e400}', "beyond IEEE 754"),
        ('{"a":1', "not JSON"),
    ],
)
def test_what_is_not_i_json_is_refused(text, why):
    with pytest.raises(ijson.NotIJson, match=why.replace("*", r"\*").replace("(", r"\(")):
        ijson.loads(text)


def test_i_json_is_read_as_json():
    assert ijson.loads(b'{"a":[1,-9007199254740991,"\\ud83d\\ude00",null,true]}') == {
        "a": [1, -9007199254740991, "\U0001f600", None, True]
    }
    with pytest.raises(ijson.NotIJson, match="not UTF-8"):
        ijson.loads(b'{"a":"\xff"}')
    with pytest.raises(ijson.NotIJson, match="not UTF-8"):
        ijson.loads('{"a":1}'.encode("utf-16"))


# -- the worked example of docs/ledger.md ------------------------------------------------------


def test_the_worked_example_of_the_format_page():
    """docs/ledger.md prints these values for implementers to test against: keep them true."""
    debit = dict(GOLDEN_ENTRY)  # the entry docs/ledger.md prints, seq 7
    credit = {
        **debit,
        "seq": 8,
        "direction": "credit",
        "account_id": "7c0d1e2f-3a4b-4c5d-9e6f-708192a3b4c5",
    }
    leaf7, leaf8 = ledger.leaf_hash(debit), ledger.leaf_hash(credit)
    assert leaf7.hex() == "d8c2af06d7e25099506b48e765f508c70660fcf8c5260fd6a66717de3781e270"
    assert leaf8.hex() == "c29c054eafef8318dc6aa5f937b0ece130249cac53653d629eb911428d2be381"
    root = merkle.root([leaf7, leaf8]).hex()
    assert root == "ac3b11ae66186321c1d67310846d53c285270201905650b25e8398f95288e5ee"
    checkpoint: dict[str, Any] = {
        "number": 3,
        "first_seq": 7,
        "last_seq": 8,
        "entry_count": 2,
        "entries_root": root,
        "previous_digest": "ab" * 32,
    }
    checkpoint["digest"] = ledger.checkpoint_digest(checkpoint)
    assert checkpoint["digest"] == (
        "d2dc40fa3e90da8d03c25ec3077cbb468affd3b6a373b44ca78841e501f3dc1c"
    )
    rfc8032_test_1 = Ed25519Signer(
        Ed25519PrivateKey.from_private_bytes(
            bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
        )
    )
    assert rfc8032_test_1.key_id == "21fe31dfa154a261626bf854046fd227"
    checkpoint["key_id"] = rfc8032_test_1.key_id
    checkpoint["created_at"] = "2026-01-31T12:00:01.000000Z"
    checkpoint["signature"] = rfc8032_test_1.sign(ledger.signing_message(checkpoint)).hex()
    assert checkpoint["signature"] == (
        "0b3d284cd38a03f0d13f0c08911363bc138511e54d1fa7bd5ca345c260bfb699"
        "93068cb10cd1f1db6047483c5e04b53ff62e707032d018bf3a0a23c4b19db50e"
    )
    proof = {
        "entry": credit,
        "checkpoint": checkpoint,
        "leaf_index": 1,
        "audit_path": [leaf7.hex()],
    }
    keyring = Ed25519Keyring([rfc8032_test_1.public_key])
    assert proofs.check_inclusion(proof, keyring).leaf_index == 1


@pytest.mark.parametrize(
    ("part", "member", "spelling"),
    [
        ("checkpoint", "signature", lambda v: v + "\n"),  # bytes.fromhex would ignore it
        ("checkpoint", "created_at", lambda v: v.replace("2", "\uff12")),  # a fullwidth digit
        ("entry", "posted_at", lambda v: v.replace("0", "\u0660")),  # an Arabic-Indic zero
        ("entry", "currency", lambda v: v + "\n"),
        ("entry", "transfer_id", lambda v: "{" + v + "}"),
    ],
)
def test_each_value_has_one_spelling(part, member, spelling):
    (sealed,) = sealed_chain([2])
    proof = proof_of(sealed, 1)
    proof[part][member] = spelling(proof[part][member])
    with pytest.raises(ledger.TamperDetected) as detected:
        proofs.check_inclusion(proof, KEYRING)
    assert detected.value.where == part
    assert "malformed" in detected.value.message or "canonical" in detected.value.message


def test_a_leaf_with_a_final_newline_is_refused_in_an_export():
    lines = build_export(checkpoints=1)
    lines[1]["leaves"][0] += "\n"
    with pytest.raises(ledger.TamperDetected, match="a leaf hash is malformed"):
        run(lines)
