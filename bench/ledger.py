"""Ledger benchmark: sealing, export and verify rates, and transfer throughput with sealing.

    .venv/bin/python bench/ledger.py [--entries 100000] [--phase-s 10] [--clients 8]
                                     [--rounds 3] [--proofs 1000]   (--rounds 0: no step 5)

Uses HOLDFAST_DATABASE_URL's server (a new database on it) or an embedded PostgreSQL in a
temporary directory. Prints figures; it is not a test. Steps:

1. a ledger of at least --entries entries, made of immediate transfers (1 to 3 legs) in batches
   of 1,000 operations through `services.transfers.execute_alone`;
2. sealing that backlog: entries sealed per second (one sealer, batches of 5,000);
3. the export (records read page by page and written as JSON Lines) and `holdfast audit
   verify` of the file (a separate process, I-JSON parsing included), and `holdfast audit
   check`'s recomputation: entries per second each;
4. inclusion proofs: --proofs entries at random served by `services.ledger.prove` (what
   GET /v1/ledger/entries/{seq}/proof answers) and checked by `domain.proofs.check_inclusion`
   (what `holdfast audit prove` does, start-up aside): proofs per second each;
5. transfer throughput of --clients threads in two "function instances" (each its own pool and
   group commit), single-leg immediate transfers on disjoint accounts, in alternating phases:
   no sealer (baseline), a sealer process sealing continuously (snapshot isolation, as
   shipped), and, for comparison, the same sealer forced to SERIALIZABLE; medians of --rounds.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import local  # bench/local.py: processes built through the composition root
import sqlalchemy as sa

from holdfast.adapters import ledger as repo
from holdfast.adapters.database import (
    Database,
    EmbeddedPostgres,
    create_engine,
    migrate,
    sqlalchemy_url,
    with_database,
)
from holdfast.adapters.signing import Ed25519Keyring, Ed25519Signer, public_pem
from holdfast.domain import proofs
from holdfast.domain.accounts import NormalBalance, OpenAccount
from holdfast.domain.actors import SYSTEM
from holdfast.domain.errors import TransientError
from holdfast.domain.transfers import Leg, ReserveCommand
from holdfast.services import accounts, transfers
from holdfast.services import ledger as service

HOLDFAST = Path(sys.executable).parent / "holdfast"


def fresh_database(server_url: str) -> str:
    name = f"bench_ledger_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(sqlalchemy_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = with_database(server_url, name)
    engine = create_engine(url, pool_size=1)
    migrate(engine)
    engine.dispose()
    return url


def open_accounts(db: Database, count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    for account_id in ids:
        accounts.open_account(
            db, OpenAccount(account_id, "EUR", "bank", NormalBalance.CREDIT, None, {}), SYSTEM
        )
    return ids


def reserve(legs: list[tuple[uuid.UUID, uuid.UUID, int]]) -> ReserveCommand:
    transfer_id = uuid.uuid4()
    return ReserveCommand(
        id=transfer_id,
        currency="EUR",
        legs=tuple(Leg(d, c, a) for d, c, a in legs),
        timeout_s=300,
        immediate=True,
        metadata={},
        request={"id": str(transfer_id)},
    )


def make_ledger(db: Database, entries: int) -> int:
    ids = open_accounts(db, 200)
    rng = random.Random(1)
    made = 0
    started = time.perf_counter()
    while made < entries:
        batch = []
        for _ in range(1_000):
            legs = []
            for _ in range(rng.choice((1, 1, 2, 3))):
                debit, credit = rng.sample(ids, 2)
                legs.append((debit, credit, rng.randint(1, 100_000)))
            batch.append(transfers.Operation(reserve(legs), SYSTEM))
            made += 2 * len(legs)
        outcomes = transfers.execute_alone(db, batch)
        assert all(o.error is None for o in outcomes)
    elapsed = time.perf_counter() - started
    print(f"ledger:   {made:,} entries made in {elapsed:.1f} s ({made / elapsed:,.0f} entries/s)")
    return made


def seal_loop(url: str, home: str, serializable: bool, stop_at: float) -> None:
    """A sealer process: seal continuously until `stop_at` (a PingSource ticking without pause)."""
    if serializable:
        repo.snapshot = lambda connection, read_only: None  # type: ignore[assignment]
    db = local.database(url, home, pool_size=1, cipher=False)
    signer = local.signer(url, home)
    sealed = 0
    while time.time() < stop_at:
        done = service.seal_pending(db, signer)
        sealed += sum(c.entry_count for c in done)
        if not done:
            time.sleep(0.01)
    print(f"          sealer: {sealed:,} entries sealed, {db.retries} retries", flush=True)
    db.dispose()


def throughput(url: str, home: str, clients: int, phase_s: float, sealer: str | None) -> float:
    instances = [local.database(url, home, pool_size=clients) for _ in range(2)]
    pairs = [open_accounts(instances[0], 2) for _ in range(clients)]
    process = None
    if sealer is not None:
        process = multiprocessing.get_context("spawn").Process(
            target=seal_loop, args=(url, home, sealer == "serializable", time.time() + phase_s)
        )
        process.start()
    done = [0] * clients
    failed = [0] * clients
    deadline = time.perf_counter() + phase_s

    def client(i: int) -> None:
        db = instances[i % 2]
        debit, credit = pairs[i]
        while time.perf_counter() < deadline:
            command = reserve([(debit, credit, 1)])
            try:
                transfers.execute(db, [transfers.Operation(command, SYSTEM)])
            except TransientError:  # 40001 after every retry: counted, not hidden
                failed[i] += 1
                continue
            done[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if process is not None:
        process.join()
    retries = sum(db.retries for db in instances)
    for db in instances:
        db.dispose()
    rate = sum(done) / elapsed
    label = {
        None: "no sealer",
        "snapshot": "sealing (as shipped)",
        "serializable": "sealing at SERIALIZABLE",
    }[sealer]
    print(
        f"          {label:24} {rate:8,.0f} transfers/s  ({retries} transaction retries, "
        f"{sum(failed)} transfers failed after all retries)",
        flush=True,
    )
    return rate


def prove(db: Database, signer: Ed25519Signer, entries: int, count: int) -> None:
    """Serve `count` proofs of random entries, then check them as `audit prove` does."""
    rng = random.Random(2)
    seqs = [rng.randint(1, entries) for _ in range(count)]
    started = time.perf_counter()
    answers = [json.loads(json.dumps(service.prove(db, seq))) for seq in seqs]
    served = time.perf_counter() - started
    keyring = Ed25519Keyring([signer.public_key])
    started = time.perf_counter()
    for answer in answers:
        proofs.check_inclusion(answer, keyring)
    checked = time.perf_counter() - started
    depth = statistics.mean(len(a["audit_path"]) for a in answers)
    print(
        f"proofs:   {count:,} served in {served:.1f} s ({count / served:,.0f} proofs/s), "
        f"checked in {checked:.2f} s ({count / checked:,.0f} proofs/s); "
        f"audit paths of {depth:.1f} hashes on average"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--phase-s", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="phases of each kind, interleaved")
    parser.add_argument("--proofs", type=int, default=1_000, help="inclusion proofs to time")
    args = parser.parse_args()
    # psycopg logs each pipeline a 40001 aborted; the retry loop handles them (counted below).
    logging.getLogger("psycopg").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="holdfast-bench-ledger-") as tmp:
        home = Path(tmp)
        embedded = None
        server_url = os.environ.get("HOLDFAST_DATABASE_URL")
        if not server_url:
            embedded = EmbeddedPostgres(home / "db")
            server_url = embedded.start()
        try:
            run(fresh_database(server_url), home, args)
        finally:
            if embedded is not None:
                embedded.stop()


def timed_verify(export: Path, public_key: Path) -> tuple[float, str]:
    """`holdfast audit verify` on an export, as an auditor runs it: (seconds, its summary)."""
    started = time.perf_counter()
    verified = subprocess.run(
        [str(HOLDFAST), "audit", "verify", str(export), "--public-key", str(public_key)],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    assert verified.returncode == 0, verified.stdout + verified.stderr[-2000:]
    return elapsed, verified.stdout.strip()


def run(url: str, home: Path, args: argparse.Namespace) -> None:
    db = local.database(url, home, pool_size=4)
    signer = local.signer(url, home)
    made = make_ledger(db, args.entries)

    started = time.perf_counter()
    checkpoints = 0
    while batch := service.seal_pending(db, signer):
        checkpoints += len(batch)
    elapsed = time.perf_counter() - started
    print(
        f"sealing:  {made:,} entries into {checkpoints} checkpoints in {elapsed:.1f} s "
        f"({made / elapsed:,.0f} entries/s)"
    )

    export = home / "ledger.jsonl"
    started = time.perf_counter()
    with export.open("w") as handle:
        for record in service.export_records(db, service.export_range(db, None, None)):
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")
    elapsed = time.perf_counter() - started
    size_mb = export.stat().st_size / 1e6
    print(
        f"export:   {made:,} entries, {size_mb:.1f} MB in {elapsed:.1f} s "
        f"({made / elapsed:,.0f} entries/s)"
    )

    key = home / "ledger-public.pem"
    key.write_text(public_pem(signer.public_key))
    elapsed, _ = timed_verify(export, key)
    print(f"verify:   {made:,} entries in {elapsed:.1f} s ({made / elapsed:,.0f} entries/s)")

    started = time.perf_counter()
    report = service.check(db, Ed25519Keyring([signer.public_key]))
    elapsed = time.perf_counter() - started
    assert report.ok, report.findings
    print(f"check:    {made:,} entries in {elapsed:.1f} s ({made / elapsed:,.0f} entries/s)")
    prove(db, signer, made, args.proofs)
    db.dispose()
    if args.rounds < 1:
        return

    print(f"transfers: {args.clients} clients, {args.phase_s:.0f} s a phase, alternating:")
    figures: dict[str | None, list[float]] = {None: [], "snapshot": [], "serializable": []}
    for sealer in [None, "snapshot", "serializable"] * args.rounds:
        figures[sealer].append(throughput(url, str(home), args.clients, args.phase_s, sealer))
    base = statistics.median(figures[None])
    shipped = statistics.median(figures["snapshot"])
    control = statistics.median(figures["serializable"])
    print(
        f"summary:  medians of {args.rounds} phases each: baseline {base:,.0f} transfers/s; "
        f"with sealing {shipped:,.0f} ({(shipped / base - 1) * 100:+.1f}%); "
        f"sealing at SERIALIZABLE {control:,.0f} ({(control / base - 1) * 100:+.1f}%)"
    )


if __name__ == "__main__":
    main()
