"""An export verifies offline, and each kind of tampering is detected and named at its line."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from holdfast import limits
from holdfast.adapters import ledger as ledger_repo
from holdfast.domain import ledger
from holdfast.domain.errors import InvariantViolation
from holdfast.entrypoints.cli import main
from holdfast.services import ledger as service
from tests.integration.ledger import support

AUDITOR = {"sub": "auditor", "scope": "ledger:read"}
Lines = list[dict[str, Any]]


def verify(path: Path, *keys: Path) -> tuple[int, str]:
    args = ["audit", "verify", str(path)]
    for key in keys:
        args += ["--public-key", str(key)]
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.stdout


@pytest.fixture
def exported(db, signer, ledger_api) -> Lines:
    """A ledger of 4+ checkpoints, exported through the API."""
    accounts = support.open_accounts(db, 5)
    support.random_payments(db, accounts, 16, seed=11, per_batch=2)
    while service.seal_once(db, signer, batch=8) is not None:
        pass
    response = ledger_api.call("GET", "/v1/ledger/export", **AUDITOR)
    assert response.status_code == 200
    assert response.mimetype == "application/x-ndjson"
    lines = [json.loads(line) for line in response.data.decode().splitlines()]
    assert sum(1 for r in lines if r["type"] == "checkpoint") >= 4
    return lines


def positions(lines: Lines, kind: str) -> list[int]:
    return [i for i, record in enumerate(lines) if record["type"] == kind]


def middle_entry(lines: Lines) -> int:
    """An entry of checkpoint 2 with entries of the same checkpoint on both sides."""
    second = positions(lines, "checkpoint")[1]
    assert lines[second + 2]["type"] == lines[second + 3]["type"] == "entry"
    return second + 2


def test_an_export_verifies(exported, public_key_file, tmp_path):
    path = support.write_jsonl(tmp_path / "ledger.jsonl", exported)
    code, out = verify(path, public_key_file)
    assert code == 0, out
    entries = len(positions(exported, "entry"))
    assert out.startswith(f"OK: {entries} entries of ")
    assert "checkpoints 1..4" in out or "checkpoints 1.." in out


def test_a_range_of_checkpoints_verifies_on_its_own(
    db, signer, ledger_api, exported, tmp_path, public_key_file
):
    response = ledger_api.call("GET", "/v1/ledger/export?from=2&to=3", **AUDITOR)
    path = tmp_path / "part.jsonl"
    path.write_bytes(response.data)
    code, out = verify(path, public_key_file)
    assert code == 0, out
    assert "checkpoints 2..3" in out


@pytest.mark.parametrize("query", ["from=0", "from=3&to=2", "to=x", "from=-1"])
def test_a_bad_range_is_422(ledger_api, query):
    response = ledger_api.call("GET", f"/v1/ledger/export?{query}", **AUDITOR)
    assert response.status_code == 422


def test_verify_needs_a_trusted_key(exported, tmp_path, signer):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = tmp_path / "other.pem"
    other.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    path = support.write_jsonl(tmp_path / "ledger.jsonl", exported)
    code, out = verify(path, other)
    assert code == 1
    assert out.startswith(f"FAILED line 2: checkpoint 1 is signed by key {signer.key_id}, which")


def change_amount(lines: Lines) -> int:
    i = middle_entry(lines)
    lines[i]["amount"] += 1
    return i


def delete_entry(lines: Lines) -> int:
    i = middle_entry(lines)
    del lines[i]
    return i


def swap_entries(lines: Lines) -> int:
    i = middle_entry(lines)
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    return i


def swap_contents_keep_seqs(lines: Lines) -> int:
    i = middle_entry(lines)
    a, b = lines[i], lines[i + 1]
    lines[i], lines[i + 1] = {**b, "seq": a["seq"]}, {**a, "seq": b["seq"]}
    return i


def insert_entry(lines: Lines) -> int:
    i = middle_entry(lines)
    forged = {**lines[i], "seq": lines[i]["seq"] + 1, "amount": 1}
    lines.insert(i + 1, forged)
    return i + 1


def change_signature(lines: Lines) -> int:
    i = positions(lines, "checkpoint")[1]
    signature = lines[i]["signature"]
    lines[i]["signature"] = ("0" if signature[0] != "0" else "1") + signature[1:]
    return i


def change_digest(lines: Lines) -> int:
    i = positions(lines, "checkpoint")[1]
    lines[i]["digest"] = hashlib.sha256(b"forged").hexdigest()
    return i


def drop_checkpoint_record(lines: Lines) -> int:
    i = positions(lines, "checkpoint")[1]
    del lines[i]
    return i  # the first entry of the dropped checkpoint now stands here


def drop_checkpoint_with_entries(lines: Lines) -> int:
    second, third = positions(lines, "checkpoint")[1:3]
    del lines[second:third]
    return second  # checkpoint 3 now stands here


def forge_with_every_hash_recomputed(lines: Lines) -> int:
    """A careful forger: changes an amount and recomputes leaf, root and digest (no key)."""
    i = middle_entry(lines)
    lines[i]["amount"] += 1
    cp = max(p for p in positions(lines, "checkpoint") if p < i)
    leaves = list(lines[cp]["leaves"])
    leaves[i - cp - 1] = ledger.leaf_hash(lines[i]).hex()
    lines[cp]["leaves"] = leaves
    lines[cp]["entries_root"] = ledger.merkle_root([bytes.fromhex(x) for x in leaves]).hex()
    lines[cp]["digest"] = ledger.checkpoint_digest(lines[cp])
    nxt = positions(lines, "checkpoint")[2]
    lines[nxt]["previous_digest"] = lines[cp]["digest"]
    return cp


def truncate(lines: Lines) -> int:
    del lines[-1]
    return len(lines)


TAMPERING: dict[str, tuple[Callable[[Lines], int], str]] = {
    "amount changed": (change_amount, "is not the entry sealed as seq"),
    "entry deleted": (delete_entry, "is missing: seq"),
    "entries swapped": (swap_entries, "is missing: seq"),
    "contents swapped, seqs kept": (swap_contents_keep_seqs, "is not the entry sealed as seq"),
    "entry inserted": (insert_entry, "is not the entry sealed as seq"),
    "signature changed": (change_signature, "the signature does not verify"),
    "digest changed": (change_digest, "its digest does not match its fields"),
    "checkpoint record dropped": (drop_checkpoint_record, "is not covered by a checkpoint"),
    "checkpoint and entries dropped": (
        drop_checkpoint_with_entries,
        "checkpoint 3 follows checkpoint 1: checkpoint 2..2 is missing",
    ),
    "every hash recomputed": (forge_with_every_hash_recomputed, "the signature does not verify"),
    "end record cut off": (truncate, "without its end record: truncated"),
}


@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_tampering_is_detected_and_named(exported, public_key_file, tmp_path, kind):
    tamper, message = TAMPERING[kind]
    bad_index = tamper(exported)
    path = support.write_jsonl(tmp_path / "tampered.jsonl", exported)
    code, out = verify(path, public_key_file)
    assert code == 1, out
    assert re.match(rf"FAILED line {bad_index + 1}( \(end of file\))?: ", out), out
    assert message in out, out


def test_progress_goes_to_stderr_and_the_summary_to_stdout(
    exported, public_key_file, tmp_path, monkeypatch
):
    from holdfast.entrypoints import audit

    monkeypatch.setattr(audit, "PROGRESS_INTERVAL_S", 0.0)
    path = support.write_jsonl(tmp_path / "ledger.jsonl", exported)
    result = CliRunner().invoke(
        main, ["audit", "verify", str(path), "--public-key", str(public_key_file)]
    )
    assert result.exit_code == 0
    assert result.stdout.startswith("OK: ")
    assert "verified 2 lines" in result.stderr
    assert "entries/s" in result.stderr


def with_decoy(record: dict[str, Any], name: str, decoy: Any) -> str:
    """The line with `name` twice: first a decoy, then the genuine value (what Python keeps)."""
    genuine = json.dumps(record, separators=(",", ":"))
    return "{" + json.dumps(name) + ":" + json.dumps(decoy) + "," + genuine[1:]


DECOYS = {
    "export": ("to", 1),
    "checkpoint digest": ("digest", "0" * 64),
    "checkpoint key_id": ("key_id", "0" * 32),
    "entry": ("amount", 1),
    "end": ("entries", 0),
}


@pytest.mark.parametrize("kind", sorted(DECOYS))
def test_a_duplicate_member_is_refused_at_every_line_type(
    exported, public_key_file, tmp_path, kind
):
    name, decoy = DECOYS[kind]
    index = middle_entry(exported) if kind == "entry" else positions(exported, kind.split()[0])[0]
    lines = [json.dumps(r, separators=(",", ":")) for r in exported]
    lines[index] = with_decoy(exported[index], name, decoy)
    # Python's json alone would read the genuine value and find nothing wrong.
    assert json.loads(lines[index]) == exported[index]
    path = tmp_path / "decoy.jsonl"
    path.write_text("\n".join(lines) + "\n")
    code, out = verify(path, public_key_file)
    assert (code, out) == (
        1,
        f"FAILED line {index + 1}: not I-JSON: the member name {name!r} appears twice in one "
        "object\n",
    )


def test_verify_ends_on_the_expected_digest(exported, public_key_file, tmp_path, ledger_api):
    latest = ledger_api.call("GET", "/v1/ledger/checkpoints/latest", **AUDITOR).json["digest"]
    path = support.write_jsonl(tmp_path / "ledger.jsonl", exported)
    args = ["audit", "verify", str(path), "--public-key", str(public_key_file)]
    result = CliRunner().invoke(main, [*args, "--expect-digest", latest.upper()])
    assert result.exit_code == 0, result.stdout
    assert result.stdout.strip().endswith("; it ends on the expected digest")
    # Cut after checkpoint 3, header and end record rewritten: verifies unless pinned.
    fourth = positions(exported, "checkpoint")[3]
    short = exported[:fourth]
    short[0] = {**short[0], "to": 3}
    short.append({"type": "end", "checkpoints": 3, "entries": len(positions(short, "entry"))})
    cut = support.write_jsonl(tmp_path / "short.jsonl", short)
    assert verify(cut, public_key_file)[0] == 0
    pinned = ["audit", "verify", str(cut), "--public-key", str(public_key_file)]
    result = CliRunner().invoke(main, [*pinned, "--expect-digest", latest])
    assert result.exit_code == 1
    assert result.stdout.startswith(
        f"FAILED line {len(short)}: the export ends on checkpoint 3 with digest "
    )
    bad = CliRunner().invoke(main, [*pinned, "--expect-digest", "xyz"])
    assert bad.exit_code == 2 and "64 hex digits" in bad.output


@pytest.mark.parametrize("page_entries", [limits.ledger_export_page_entries, 1])
def test_the_fast_export_lines_are_the_records_json(db, signer, monkeypatch, page_entries):
    """The HTTP export encodes entry lines straight from the rows (UUIDs as text, times in
    UTC from the database), reading each page ahead in a thread: byte for byte `json.dumps`
    of the records the check reads, in order, whether in one page or one page a checkpoint."""
    monkeypatch.setattr(limits, "ledger_export_page_entries", page_entries)
    accounts = support.open_accounts(db, 5)
    for _ in range(4):
        support.random_payments(db, accounts, 15)
        support.seal_all(db, signer)
    span = service.export_range(db, None, None)
    records = list(service.export_records(db, span))
    assert len(records) > 100 and span.last >= 4
    assert list(service.export_lines(db, span)) == [
        json.dumps(record, separators=(",", ":")) for record in records
    ]


@pytest.fixture
def paged(db, signer, monkeypatch):
    """Three checkpoints, each its own page of the export."""
    monkeypatch.setattr(limits, "ledger_export_page_entries", 1)
    accounts = support.open_accounts(db, 4)
    for _ in range(3):
        support.random_payments(db, accounts, 5)
        support.seal_all(db, signer)


@pytest.mark.usefixtures("paged")
def test_an_export_abandoned_midway_stops_reading_ahead(db):
    """A client that goes away mid-export closes the stream: the page readers end."""
    before = set(threading.enumerate())

    def reading_ahead() -> list[threading.Thread]:
        started = set(threading.enumerate()) - before
        return [t for t in started if t.name.startswith("holdfast-page-reader")]

    lines = service.export_lines(db, service.export_range(db, None, None))
    assert json.loads(next(lines))["type"] == "export"
    assert json.loads(next(lines))["type"] == "checkpoint"
    assert reading_ahead()  # its readers stay until the export ends
    lines.close()
    assert reading_ahead() == []


@pytest.mark.usefixtures("paged")
def test_a_failed_page_read_fails_the_export(db, monkeypatch):
    """An error while a page is read ahead is raised to the export's reader, not lost: the
    lines before the failed page come out, then the error."""
    export_rows = ledger_repo.export_rows
    second = service.list_checkpoints(db, after=0, limit=3)[1]

    def failing_second_page(connection, first_seq, last_seq):
        if first_seq == second.first_seq:  # whichever reader thread reads it, and when
            raise RuntimeError("the database went away")
        return export_rows(connection, first_seq, last_seq)

    monkeypatch.setattr(ledger_repo, "export_rows", failing_second_page)
    lines = service.export_lines(db, service.export_range(db, None, None))
    read = []
    with pytest.raises(RuntimeError, match="went away"):
        read.extend(json.loads(line) for line in lines)
    assert [r["type"] for r in read][:2] == ["export", "checkpoint"]
    assert {r["type"] for r in read[2:]} == {"entry"}
    assert all(r["seq"] < second.first_seq for r in read[2:])


@pytest.mark.parametrize(
    "printed",
    [
        "2026-01-31 12:00:00.123456",
        "2026-01-31 12:00:00.12",
        "2026-01-31 12:00:00.1",
        "2026-01-31 12:00:00",
        "1999-12-31 23:59:59.999999",
        "2026-02-28 00:00:00.00001",
    ],
)
def test_times_as_the_database_prints_them_are_the_ledgers_times(db, printed):
    """The export reads times as text: whatever the database prints (trailing zeros of the
    fraction dropped, no fraction at all), the line carries the ledger's one form."""
    with db.engine.connect() as connection:
        text, value = connection.execute(
            sa.text(
                "SELECT CAST(t AT TIME ZONE 'UTC' AS TEXT), t FROM "
                "(SELECT CAST(CAST(:printed AS TEXT) || '+00' AS TIMESTAMPTZ) AS t) AS x"
            ),
            {"printed": printed},
        ).one()
    assert text == printed  # what the database prints
    assert ledger.time_of_database_text(text) == ledger.format_time(value)


def test_a_time_in_another_style_is_refused():
    for printed in ("31.01.2026 12:00:00.123456", "01/31/2026 12:00:00.123456 UTC", ""):
        with pytest.raises(InvariantViolation):
            ledger.time_of_database_text(printed)
