"""Backup and restore drill on the embedded PostgreSQL (the restore runbook, rehearsed).

A database with a sealed ledger takes transfers from a background thread the whole time. The
backup is a `pg_dump` of one exported snapshot, and the test reads "what existed at the
backup's instant" in that same snapshot. Transfers and sealing go on after it. The dump is
restored into a fresh database, which must hold exactly the entries, checkpoints and queued
entries of the backup's instant (nothing from after it), pass the invariants,
`holdfast audit check`, and `holdfast audit verify` of its own export, and go on sealing from
its last checkpoint. The figures (entries, sizes, times) are printed.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from holdfast.adapters.database import (
    Database,
    EmbeddedPostgres,
    create_engine,
    sqlalchemy_url,
)
from holdfast.adapters.signing import DEV_KEY, Ed25519Signer, load_dev_signer, public_pem
from holdfast.domain.accounts import NormalBalance, OpenAccount
from holdfast.domain.actors import SYSTEM
from holdfast.domain.transfers import Leg, ReserveCommand
from holdfast.entrypoints.cli import main
from holdfast.services import accounts, transfers
from holdfast.services import ledger as service
from tests.conftest import scratch_database
from tests.integration.helpers import check_invariants

ACCOUNTS = 40
TRANSFERS_BEFORE = 3_000  # sealed history before the backup
BATCH = 100  # transfers per transaction
SEAL_EVERY = 3  # the background writer seals after every few batches


@dataclass
class Truth:
    """The ledger as it was at the backup's instant, read in the dump's own snapshot."""

    entries: set[UUID]
    checkpoints: list[tuple[int, str]]  # (number, digest) in order
    queued: set[UUID]
    transfers: int


@dataclass
class Writer:
    """Transfers (and sealing) from a thread, until stopped: the traffic a backup runs under."""

    db: Database
    signer: Ed25519Signer
    account_ids: list[UUID]
    stop: threading.Event = field(default_factory=threading.Event)
    batches: int = 0
    errors: list[BaseException] = field(default_factory=list)

    def run(self) -> None:
        rng = random.Random(11)
        try:
            while not self.stop.is_set():
                pay(self.db, self.account_ids, BATCH // 4, rng)
                self.batches += 1
                if self.batches % SEAL_EVERY == 0:
                    service.seal_pending(self.db, self.signer)
        except BaseException as error:  # reported by the test, never lost in the thread
            self.errors.append(error)


def pay(db: Database, account_ids: list[UUID], count: int, rng: random.Random) -> None:
    """`count` immediate transfers of 1 to 3 legs between random accounts, one transaction."""
    commands = []
    for _ in range(count):
        legs = tuple(
            Leg(*rng.sample(account_ids, 2), rng.randint(1, 100_000))
            for _ in range(rng.choice((1, 1, 2, 3)))
        )
        transfer_id = uuid.uuid4()
        commands.append(
            ReserveCommand(transfer_id, "EUR", legs, 300, True, {}, {"id": str(transfer_id)})
        )
    outcomes = transfers.execute(db, [transfers.Operation(c, SYSTEM) for c in commands])
    errors = [o.error for o in outcomes if o.error is not None]
    assert not errors, errors


def open_accounts(db: Database) -> list[UUID]:
    ids = [uuid.uuid4() for _ in range(ACCOUNTS)]
    for account_id in ids:
        command = OpenAccount(account_id, "EUR", "bank", NormalBalance.CREDIT, None, {})
        accounts.open_account(db, command, SYSTEM)
    return ids


def read_truth(connection: sa.Connection) -> Truth:
    entries = set(connection.execute(sa.text("SELECT id FROM ledger_entries")).scalars())
    checkpoints = [
        (row.number, row.digest)
        for row in connection.execute(
            sa.text("SELECT number, digest FROM ledger_checkpoints ORDER BY number")
        )
    ]
    queued = set(connection.execute(sa.text("SELECT entry_id FROM ledger_unsequenced")).scalars())
    count = connection.execute(sa.text("SELECT count(*) FROM transfers")).scalar_one()
    return Truth(entries, checkpoints, queued, int(count))


def tool(name: str) -> str:
    return str(EmbeddedPostgres(Path(".")).bin_dir / name)


def run_tool(command: list[str]) -> float:
    """Run a PostgreSQL client tool; return the seconds it took."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return time.perf_counter() - started


@pytest.fixture
def restored_url(server_url: str) -> Iterator[str]:
    """An empty database to restore into."""
    with scratch_database(server_url, "restored_", template=None) as url:
        yield url


def backup_under_load(database_url: str, dump: Path, writer: Writer) -> tuple[Truth, float]:
    """pg_dump of one exported snapshot while `writer` keeps going; the truth of that
    snapshot, read in it."""
    engine = sa.create_engine(sqlalchemy_url(database_url))
    try:
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as connection:
            snapshot = connection.execute(sa.text("SELECT pg_export_snapshot()")).scalar_one()
            truth = read_truth(connection)
            seconds = run_tool(
                [
                    tool("pg_dump"),
                    "--format=custom",
                    f"--snapshot={snapshot}",
                    f"--file={dump}",
                    f"--dbname={database_url}",
                ]
            )
            connection.rollback()
    finally:
        engine.dispose()
    return truth, seconds


def verify_export(db: Database, public_key: Path, path: Path) -> str:
    span = service.export_range(db, None, None)
    with path.open("w") as handle:
        for record in service.export_records(db, span):
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")
    result = CliRunner().invoke(
        main, ["audit", "verify", str(path), "--public-key", str(public_key)]
    )
    assert result.exit_code == 0, result.stdout
    return str(result.stdout).strip()


def test_a_backup_taken_under_load_restores_a_whole_ledger(
    db: Database, database_url: str, restored_url: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    signer = load_dev_signer(home)
    public_key = tmp_path / "ledger-public.pem"
    public_key.write_text(public_pem(signer.public_key))
    account_ids = open_accounts(db)
    rng = random.Random(7)
    for _ in range(TRANSFERS_BEFORE // BATCH):
        pay(db, account_ids, BATCH, rng)
    service.seal_pending(db, signer)

    writer = Writer(db, signer, account_ids)
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    try:
        while writer.batches < 3:  # the backup starts with transfers in flight
            time.sleep(0.05)
        truth, backup_s = backup_under_load(database_url, tmp_path / "holdfast.dump", writer)
        after_backup = writer.batches
        while writer.batches < after_backup + 2 * SEAL_EVERY:  # more history after the backup
            time.sleep(0.05)
    finally:
        writer.stop.set()
        thread.join(timeout=60)
    assert not writer.errors, writer.errors
    with db.engine.connect() as connection:
        live = read_truth(connection)
    assert live.entries > truth.entries and len(live.checkpoints) > len(truth.checkpoints)

    restore_s = run_tool(
        [
            tool("pg_restore"),
            "--exit-on-error",
            "--jobs=2",
            f"--dbname={restored_url}",
            str(tmp_path / "holdfast.dump"),
        ]
    )
    restored = Database(create_engine(restored_url, pool_size=2), cipher=None)
    try:
        with restored.engine.connect() as connection:
            found = read_truth(connection)
        # Exactly the backup's instant: every entry and checkpoint then, nothing after.
        assert found == truth
        check_invariants(restored)
        summary = verify_export(restored, public_key, tmp_path / "restored.jsonl")
        sealed = len(truth.entries) - len(truth.queued)
        assert summary.startswith(f"OK: {sealed} entries of ")
        check = CliRunner().invoke(
            main,
            ["audit", "check"],
            env={
                "HOLDFAST_DATABASE_URL": restored_url,
                "HOLDFAST_HOME": str(home),
                "HOLDFAST_LEDGER_SIGNING_KEY_FILE": str(home / DEV_KEY),
            },
        )
        assert check.exit_code == 0, check.stdout
        assert "OK (database):" in check.stdout
        # The restored ledger goes on: the queued entries seal onto its last checkpoint.
        resumed = service.seal_pending(restored, signer)
        if truth.queued:
            assert resumed[0].number == truth.checkpoints[-1][0] + 1
            assert resumed[0].previous_digest == truth.checkpoints[-1][1]
        assert verify_export(restored, public_key, tmp_path / "resumed.jsonl").startswith(
            f"OK: {len(truth.entries)} entries of "
        )
    finally:
        restored.dispose()

    figures = (
        f"backup/restore drill: {len(truth.entries)} entries ({sealed} sealed in "
        f"{len(truth.checkpoints)} checkpoints, {len(truth.queued)} queued), "
        f"{truth.transfers} transfers at the backup's instant; "
        f"{len(live.entries) - len(truth.entries)} entries written after it and absent from "
        f"the restore; dump {(tmp_path / 'holdfast.dump').stat().st_size / 1e6:.1f} MB; "
        f"backup {backup_s:.2f} s under load, restore {restore_s:.2f} s"
    )
    print(f"\n[figures] {figures}")
