"""Sealing: every entry gets exactly one place in the ledger order, in chained signed checkpoints,
whatever the batch size, the commit order of confirms, or the number of concurrent sealers."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from holdfast.adapters import ledger as ledger_repo
from holdfast.adapters.database import Database
from holdfast.adapters.signing import Ed25519Keyring, load_signer, private_pem
from holdfast.domain import ledger
from holdfast.domain.errors import SerializationFailure
from holdfast.services import ledger as service
from tests.conftest import snapshot
from tests.integration.ledger import support


def assert_sealed_exactly_once(db: Database) -> list[ledger.Checkpoint]:
    """Every entry has one seq; seqs run 1..N; checkpoints chain; transfers are never split."""
    with db.engine.connect() as c:
        entries = c.execute(sa.text("SELECT count(*) FROM ledger_entries")).scalar_one()
        seqs = [r.seq for r in c.execute(sa.text("SELECT seq FROM ledger_sequence ORDER BY seq"))]
        queued = c.execute(sa.text("SELECT count(*) FROM ledger_unsequenced")).scalar_one()
        split = c.execute(
            sa.text(
                "SELECT transfer_id FROM ledger_sequence GROUP BY transfer_id "
                "HAVING count(DISTINCT checkpoint) > 1"
            )
        ).all()
    assert seqs == list(range(1, entries + 1))
    assert queued == 0
    assert split == []
    checkpoints = service.list_checkpoints(db, after=0, limit=1000)
    previous = None
    for checkpoint in checkpoints:
        assert checkpoint.number == (previous.number + 1 if previous else 1)
        assert checkpoint.first_seq == (previous.last_seq + 1 if previous else 1)
        assert checkpoint.previous_digest == (
            previous.digest if previous else ledger.GENESIS_DIGEST
        )
        previous = checkpoint
    assert previous is not None and previous.last_seq == entries
    return checkpoints


def test_every_entry_is_sealed_once_in_chained_checkpoints(db, signer):
    accounts = support.open_accounts(db, 6)
    for round_ in range(3):
        support.random_payments(db, accounts, 20, seed=round_)
        while service.seal_once(db, signer, batch=9) is not None:
            pass
    checkpoints = assert_sealed_exactly_once(db)
    assert len(checkpoints) > 6
    assert service.check(db, Ed25519Keyring([signer.public_key])).ok


def test_a_batch_is_completed_to_whole_transfers(db, signer):
    a, b, c, d = support.open_accounts(db, 4)
    support.pay(db, [support.reserve([(a, b, 1), (b, c, 2), (c, d, 3)]) for _ in range(4)])
    while service.seal_once(db, signer, batch=1) is not None:
        pass
    checkpoints = assert_sealed_exactly_once(db)
    assert [cp.entry_count for cp in checkpoints] == [6, 6, 6, 6]


def test_an_entry_that_commits_late_is_sealed_in_a_later_checkpoint(db, signer):
    """A confirm that started first (earlier posted_at) but commits after a seal is not lost."""
    source, target, other, another = support.open_accounts(db, 4)
    late = support.reserve([(source, target, 7)], immediate=False)
    support.pay(db, [late])
    with support.confirm_held_open(db, late.id):
        support.pay(db, [support.reserve([(other, another, 1)]) for _ in range(3)])
        first = service.seal_pending(db, signer)
    second = service.seal_pending(db, signer)
    assert [cp.entry_count for cp in first + second] == [6, 2]
    late_entries = service.list_entries(db, account_id=None, transfer_id=late.id, after=0, limit=10)
    sealed_first = service.list_entries(db, account_id=None, transfer_id=None, after=0, limit=6)
    assert {e.seq for e in late_entries} == {7, 8}
    assert all(e.posted_at < x.posted_at for e in late_entries for x in sealed_first)
    assert_sealed_exactly_once(db)


def test_concurrent_sealers_never_fork_or_repeat(db, signer, make_db):
    accounts = support.open_accounts(db, 8)
    stop = threading.Event()
    errors: list[BaseException] = []
    sealers = [make_db(pool_size=1, cipher=False) for _ in range(3)]

    def seal_loop(sealer_db: Database) -> None:
        try:
            while not stop.is_set():
                service.seal_once(sealer_db, signer, batch=5)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=seal_loop, args=(d,)) for d in sealers]
    for thread in threads:
        thread.start()
    try:
        for round_ in range(10):
            support.random_payments(db, accounts, 10, seed=100 + round_, per_batch=2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for sealer_db in sealers:
            sealer_db.dispose()
    assert errors == []
    support.seal_all(db, signer)
    assert_sealed_exactly_once(db)
    assert service.check(db, Ed25519Keyring([signer.public_key])).ok


@pytest.fixture
def sealer(make_db) -> Database:
    """A sealer process with few attempts and no injected faults, so that its attempts are
    used up by the races each test stages, and nothing else (the fault pass included)."""
    sealer_db = make_db(pool_size=1, cipher=False, faults=False)
    sealer_db.attempts_max = 3
    return sealer_db


def test_a_sealer_that_loses_every_race_reports_nothing(db, sealer, signer, monkeypatch):
    """A sealer that reads the chain's head just before another sealer extends it loses the
    insert of that checkpoint, re-reads and may lose again: when its attempts run out, the
    entries it meant to seal are sealed (by the others), so it answers None, not an error."""
    a, b = support.open_accounts(db, 2)
    support.pay(db, [support.reserve([(a, b, 3)])])
    service.seal_pending(db, signer)
    support.pay(db, [support.reserve([(b, a, 1)])])
    # Always one step behind: every attempt sees the head before checkpoint 1 was sealed.
    monkeypatch.setattr(ledger_repo, "latest_checkpoint", lambda connection: None)
    before = snapshot(db)
    assert service.seal_once(sealer, signer) is None
    assert snapshot(db) == before
    assert sealer.retries == 2  # it did race, and re-read after each lost insert
    monkeypatch.undo()
    assert [c.number for c in service.seal_pending(db, signer)] == [2]
    assert_sealed_exactly_once(db)


def test_a_sealer_failing_40001_while_others_seal_reports_nothing(
    db, sealer, signer, make_db, monkeypatch
):
    """A sealer whose every attempt dies with 40001 while other sealers extend the chain lost
    its races (the way they are lost under SERIALIZABLE): None, and nothing of its own written."""
    a, b = support.open_accounts(db, 2)
    support.pay(db, [support.reserve([(a, b, 1)]) for _ in range(4)])
    other = make_db(pool_size=1, cipher=False)
    insert_sealed = ledger_repo.insert_sealed

    def lose(connection, sealed):
        if connection.engine is other.engine:
            return insert_sealed(connection, sealed)
        assert service.seal_once(other, signer, batch=1) is not None  # another sealer wins
        raise SerializationFailure("could not serialize access")

    monkeypatch.setattr(ledger_repo, "insert_sealed", lose)
    assert service.seal_once(sealer, signer) is None
    assert sealer.retries == 2
    monkeypatch.setattr(ledger_repo, "insert_sealed", insert_sealed)
    assert [c.entry_count for c in service.list_checkpoints(db, after=0, limit=10)] == [2, 2, 2]
    assert [c.entry_count for c in service.seal_pending(db, signer)] == [2]
    assert_sealed_exactly_once(db)


def test_a_sealer_failing_40001_with_no_sealer_ahead_raises(db, sealer, signer, monkeypatch):
    """40001 on every attempt while the head never moved is no lost race: it is reported."""
    a, b = support.open_accounts(db, 2)
    support.pay(db, [support.reserve([(a, b, 1)])])

    def fail(connection, sealed):
        raise SerializationFailure("could not serialize access")

    monkeypatch.setattr(ledger_repo, "insert_sealed", fail)
    before = snapshot(db)
    with pytest.raises(SerializationFailure):
        service.seal_once(sealer, signer)
    assert snapshot(db) == before
    assert sealer.retries == 2


def test_each_checkpoint_is_announced_through_the_outbox(db, signer):
    a, b = support.open_accounts(db, 2)
    support.pay(db, [support.reserve([(a, b, 3)])])
    [checkpoint] = service.seal_pending(db, signer)
    with db.engine.connect() as c:
        row = c.execute(
            sa.text("SELECT subject, data FROM outbox WHERE type = :t"),
            {"t": "dev.holdfast.ledger.checkpoint.v1"},
        ).one()
    assert row.subject == "1"
    assert row.data == checkpoint.record()


def test_a_rotated_key_signs_on_and_both_keys_verify_the_chain(db, signer, tmp_path: Path):
    a, b = support.open_accounts(db, 2)
    support.pay(db, [support.reserve([(a, b, 3)])])
    service.seal_pending(db, signer)
    new_file = tmp_path / "rotated.pem"
    new_file.write_bytes(private_pem())
    rotated = load_signer(new_file)
    support.pay(db, [support.reserve([(b, a, 1)])])
    service.seal_pending(db, rotated)
    checkpoints = service.list_checkpoints(db, after=0, limit=10)
    assert [cp.key_id for cp in checkpoints] == [signer.key_id, rotated.key_id]
    assert [k[0] for k in service.known_keys(db)] == [signer.key_id, rotated.key_id]
    both = Ed25519Keyring([signer.public_key, rotated.public_key])
    assert service.check(db, both).ok
    only_old = service.check(db, Ed25519Keyring([signer.public_key]))
    assert only_old.findings == [
        f"checkpoint 2: checkpoint 2 is signed by key {rotated.key_id}, "
        "which is not among the trusted public keys"
    ]


def test_transfers_of_one_transaction_are_cut_between_transfers(db, signer):
    """All entries share one posted_at: the batch still ends at a transfer's last entry."""
    accounts = support.open_accounts(db, 5)
    support.random_payments(db, accounts, 40, seed=9, per_batch=40)
    while service.seal_once(db, signer, batch=7) is not None:
        pass
    checkpoints = assert_sealed_exactly_once(db)
    assert len(checkpoints) > 5
    assert all(7 <= cp.entry_count <= 7 + 5 for cp in checkpoints[:-1])  # legs: 1 to 3


def test_the_queue_is_measured_for_the_sealing_lag_gauges(db, signer):
    a, b = support.open_accounts(db, 2)
    support.pay(db, [support.reserve([(a, b, 1), (b, a, 2)])])
    assert service.measure_queue(db) == 4
    service.seal_pending(db, signer)
    assert service.measure_queue(db) == 0
