"""Reads as the ledger grows: each read's latency at several sizes, and the export and verify.

    .venv/bin/python bench/growth.py [--quick] [--sizes 10000,100000,...] [--samples 40]

Starts `holdfast dev` on a new database (HOLDFAST_DATABASE_URL's server, or an embedded
PostgreSQL in a temporary directory) and grows its ledger to each size in turn (default
10k, 100k, 500k, 1M and 2M entries; `--quick`: 10k, 30k and 100k). How it writes: bulk SQL,
2,500 immediate single-leg transfers to a transaction, each the rows a confirm writes (the
transfer, the account index, two entries with their uuid5 ids and queue rows, the account
counters; not the outbox), half from one funding account to two customers (hot accounts),
half between 200 spread accounts. Why: through the transfers service (the batch endpoint
without HTTP) this shared 2-core machine wrote 2,000 entries/s, so 2 million would take
most of an hour; in bulk the database is the limit. Everything the reads use is then made
by the real sealer: `holdfast dev`'s once-a-second tick seals the queue (checkpoints, seal
points, running totals) while the writes go on, and each size is measured once it is empty.

At each size, once the sealing queue is empty (and vacuumed: see `vacuum_queue`), each read
is timed over HTTP through the dev gateway `--samples` times (median and p99): the funding
account's balance (now, and as of the middle of the history), a spread account's balance, the
trial balance (now, and as of the middle), the funding account's transfer and entry pages,
and the account itself; the table ends with largest / smallest (medians). Then the ledger
reads' SQL, new (running totals) and old (the plain sum before migration 0006), under EXPLAIN
(ANALYZE, BUFFERS): buffers touched, which the machine's load does not move. At the largest
size: bytes on disk per entry, the export streamed over HTTP to a file (direct from the
ledger function, then through the dev gateway), and `holdfast audit verify` of it (a
separate process), in entries per second.

This is a script that prints figures, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import local  # noqa: E402
from bench.ledger import fresh_database, timed_verify  # noqa: E402
from tests.e2e.conftest import start_dev, stop_dev  # noqa: E402

from holdfast.adapters import ledger_totals as totals_repo  # noqa: E402
from holdfast.adapters.database import Database, EmbeddedPostgres  # noqa: E402
from holdfast.domain.accounts import Direction, NormalBalance, OpenAccount  # noqa: E402
from holdfast.domain.actors import SYSTEM  # noqa: E402
from holdfast.domain.transfers import entry_id  # noqa: E402
from holdfast.services import accounts  # noqa: E402

SCOPE = "accounts:read accounts:write transfers:read transfers:write ledger:read operator"
SIZES = (10_000, 100_000, 500_000, 1_000_000, 2_000_000)
QUICK_SIZES = (10_000, 30_000, 100_000)
SPREAD_ACCOUNTS = 200
Timing = tuple[float, float]  # median, p99 (ms)
TRANSFERS_PER_TRANSACTION = 2_500


class Http:
    """One keep-alive connection to the gateway with an operator's token."""

    def __init__(self, base_url: str, token: str) -> None:
        parts = urlsplit(base_url)
        self.connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=600)
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            self.connection.request("GET", path, headers=self.headers)
            response = self.connection.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError):  # idle keep-alive closed
            self.connection.close()
            self.connection.request("GET", path, headers=self.headers)
            response = self.connection.getresponse()
        return response.status, response.read()

    def timed(self, path: str) -> float:
        started = time.perf_counter()
        status, body = self.get(path)
        elapsed = (time.perf_counter() - started) * 1000
        assert status == 200, (path, status, body[:300])
        return elapsed


def open_account(db: Database, overdraft_limit: int | None) -> uuid.UUID:
    account_id = uuid.uuid4()
    accounts.open_account(
        db,
        OpenAccount(account_id, "EUR", "bench", NormalBalance.CREDIT, overdraft_limit, {}),
        SYSTEM,
    )
    return account_id


# The rows an immediate single-leg transfer's confirm writes (services.transfers.apply), for a
# whole chunk at once: the transfer, the account index, the two entries and their queue rows,
# and the account counters. Not written: the outbox (its events would only load the relay).
WRITE_CHUNK = [
    """INSERT INTO transfers (id, state, currency, legs, amount, timeout_s, immediate, metadata,
    request, created_by, created_at, expires_at, confirmed_amount, resolved_at)
    SELECT t, 'confirmed', 'EUR', jsonb_build_array(jsonb_build_object('debit_account_id',
    CAST(d AS TEXT), 'credit_account_id', CAST(c AS TEXT), 'amount', a)), a, 300, true,
    '{}', jsonb_build_object('id', CAST(t AS TEXT)), 'bench', now(), NULL, a, now()
    FROM unnest(CAST(:transfers AS UUID[]), CAST(:debits AS UUID[]), CAST(:credits AS UUID[]),
    CAST(:amounts AS BIGINT[])) AS x (t, d, c, a)""",
    """INSERT INTO account_transfers (account_id, created_at, transfer_id)
    SELECT a, now(), t FROM unnest(CAST(:debits AS UUID[]), CAST(:transfers AS UUID[]))
        AS x (a, t)
    UNION ALL
    SELECT a, now(), t FROM unnest(CAST(:credits AS UUID[]), CAST(:transfers AS UUID[]))
        AS x (a, t)""",
    """INSERT INTO ledger_entries (id, transfer_id, leg, direction, account_id, amount, currency,
    posted_at)
    SELECT i, t, 0, d, a, m, 'EUR', now() FROM unnest(CAST(:entry_ids AS UUID[]),
    CAST(:entry_transfers AS UUID[]), CAST(:directions AS TEXT[]), CAST(:entry_accounts AS UUID[]),
    CAST(:entry_amounts AS BIGINT[])) AS x (i, t, d, a, m)""",
    """INSERT INTO ledger_unsequenced (entry_id, posted_at)
    SELECT i, now() FROM unnest(CAST(:entry_ids AS UUID[])) AS x (i)""",
    """UPDATE accounts SET debits_posted = debits_posted + x.d, credits_posted =
    credits_posted + x.c, updated_at = now()
    FROM (SELECT a, sum(CASE WHEN d = 'debit' THEN m ELSE 0 END) AS d,
                 sum(CASE WHEN d = 'credit' THEN m ELSE 0 END) AS c
          FROM unnest(CAST(:entry_accounts AS UUID[]), CAST(:directions AS TEXT[]),
                      CAST(:entry_amounts AS BIGINT[])) AS u (a, d, m) GROUP BY a) x
    WHERE accounts.id = x.a""",
]


class Ledger:
    """The growing ledger: chunks of transfers written in bulk, counting its entries."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.rng = random.Random(17)
        self.funding = open_account(db, None)
        self.customers = [open_account(db, None) for _ in range(2)]
        self.spread = [open_account(db, None) for _ in range(SPREAD_ACCOUNTS)]
        self.entries = 0
        self.times: list[tuple[int, datetime]] = []  # (entries, database time) after writes
        self.write_s = 0.0

    def grow_to(self, size: int) -> None:
        started = time.perf_counter()
        while self.entries < size:
            self.write_chunk(min(TRANSFERS_PER_TRANSACTION, (size - self.entries + 1) // 2))
            self.times.append((self.entries, self.now()))
        self.write_s += time.perf_counter() - started

    def write_chunk(self, count: int) -> None:
        """`count` transfers in one transaction: half funding -> a customer, half spread."""
        legs = []
        for i in range(count):
            if i % 2 == 0:
                legs.append((self.funding, self.customers[i // 2 % 2]))
            else:
                legs.append(tuple(self.rng.sample(self.spread, 2)))
        ids = [uuid.uuid4() for _ in range(count)]
        amounts = [self.rng.randint(1, 100_000) for _ in range(count)]
        params: dict[str, list[object]] = {
            "transfers": list(ids),
            "debits": [d for d, _ in legs],
            "credits": [c for _, c in legs],
            "amounts": list(amounts),
            "entry_ids": [],
            "entry_transfers": [],
            "directions": [],
            "entry_accounts": [],
            "entry_amounts": [],
        }
        for transfer_id, (debit, credit), amount in zip(ids, legs, amounts, strict=True):
            for direction, account in ((Direction.DEBIT, debit), (Direction.CREDIT, credit)):
                params["entry_ids"].append(entry_id(transfer_id, 0, direction))
                params["entry_transfers"].append(transfer_id)
                params["directions"].append(str(direction))
                params["entry_accounts"].append(account)
                params["entry_amounts"].append(amount)
        with self.db.engine.begin() as connection:
            for statement in WRITE_CHUNK:
                connection.execute(sa.text(statement), params)
        self.entries += 2 * count

    def now(self) -> datetime:
        with self.db.engine.connect() as connection:
            found: datetime = connection.execute(sa.text("SELECT now()")).scalar_one()
        return found

    def middle(self) -> datetime:
        """A time at which about half of the current entries were posted."""
        half = self.entries // 2
        return min(self.times, key=lambda point: abs(point[0] - half))[1]

    def wait_sealed(self) -> float:
        """Wait until the dev sealer has emptied the queue; return the seconds waited."""
        started = time.perf_counter()
        while True:
            with self.db.engine.connect() as connection:
                queued = connection.execute(
                    sa.text("SELECT count(*) FROM ledger_unsequenced")
                ).scalar_one()
            if queued == 0:
                return time.perf_counter() - started
            time.sleep(0.5)


def reads(ledger: Ledger) -> dict[str, Callable[[], str]]:
    """name -> the path to GET (computed at each size: as_of follows the history)."""
    funding = ledger.funding
    spread = ledger.spread[0]

    def middle() -> str:
        return quote(ledger.middle().isoformat())

    return {
        "balance (funding, now)": lambda: f"/v1/ledger/accounts/{funding}/balance",
        "balance (funding, as_of middle)": lambda: (
            f"/v1/ledger/accounts/{funding}/balance?as_of={middle()}"
        ),
        "balance (spread account, now)": lambda: f"/v1/ledger/accounts/{spread}/balance",
        "trial balance (now)": lambda: "/v1/ledger/trial-balance",
        "trial balance (as_of middle)": lambda: f"/v1/ledger/trial-balance?as_of={middle()}",
        "transfers page (funding, 100)": lambda: f"/v1/transfers?account_id={funding}&limit=100",
        "entries page (funding, 100)": lambda: f"/v1/ledger/entries?account_id={funding}&limit=100",
        "account (funding)": lambda: f"/v1/accounts/{funding}",
    }


# The database's own work for the ledger reads, new (totals) and old (a sum over every entry up
# to as_of, what the reads did before migration 0006): buffers touched, which do not depend on
# how loaded the machine is, and the execution time the server reports.
OLD_BALANCE = (
    "SELECT direction, sum(amount) AS total, count(*) AS n FROM ledger_entries "
    "WHERE account_id = :account_id AND posted_at <= :as_of GROUP BY direction"
)
OLD_TRIAL = (
    "SELECT currency, direction, sum(amount) AS total FROM ledger_entries "
    "WHERE posted_at <= :as_of GROUP BY currency, direction"
)


def database_work(db: Database, ledger: Ledger, samples: int) -> dict[str, tuple[int, float]]:
    """name -> (buffers touched, median execution ms) of each SQL read, now and mid-history."""
    queries = {}
    for when, at in (("now", ledger.now()), ("middle", ledger.middle())):
        queries[f"balance {when}, totals (new)"] = (totals_repo.ACCOUNT_AS_OF.text, at)
        queries[f"balance {when}, sum (old)"] = (OLD_BALANCE, at)
        queries[f"trial {when}, totals (new)"] = (totals_repo.TRIAL_AS_OF.text, at)
        queries[f"trial {when}, sum (old)"] = (OLD_TRIAL, at)
    found = {}
    with db.engine.connect() as connection:
        for name, (sql, at) in queries.items():
            params = {"as_of": at, "account_id": ledger.funding}
            explain = sa.text("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql)
            runs = []
            for _ in range(samples):
                plan = connection.execute(explain, params).scalar_one()[0]
                top = plan["Plan"]
                blocks = top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)
                runs.append((blocks, plan["Execution Time"]))
            found[name] = (runs[-1][0], statistics.median(ms for _, ms in runs))
        connection.rollback()
    return found


STORAGE_TABLES = (
    "ledger_entries",
    "ledger_unsequenced",
    "ledger_sequence",
    "ledger_checkpoints",
    "ledger_seal_points",
    "ledger_account_totals",
    "ledger_currency_totals",
    "transfers",
    "account_transfers",
)


def print_storage(db: Database, entries: int) -> None:
    """Bytes on disk (table, indexes and TOAST) per ledger entry, table by table."""
    with db.engine.connect() as connection:
        sizes = {
            table: connection.execute(
                sa.text("SELECT pg_total_relation_size(CAST(:t AS regclass))"), {"t": table}
            ).scalar_one()
            for table in STORAGE_TABLES
        }
    ledger = sum(v for k, v in sizes.items() if k.startswith("ledger_"))
    print(f"storage at {entries:,} entries (bytes per entry, indexes included):")
    for table, size in sizes.items():
        print(f"  {table:<26}{size / 1e6:10,.1f} MB {size / entries:8.1f} B/entry")
    print(
        f"  {'ledger tables together':<26}{ledger / 1e6:10,.1f} MB {ledger / entries:8.1f} B/entry"
    )


def vacuum_queue(db: Database) -> None:
    """The bench writes in bursts, so the empty queue is left with many dead rows, which a
    read's scan of the queue would visit until autovacuum runs (in steady state the queue
    holds about a second of entries and autovacuum keeps up): vacuum it now. Then CHECKPOINT,
    so no write-back of the burst's dirty pages runs under the reads (as for pgbench)."""
    with db.engine.connect() as connection:
        autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
        autocommit.execute(sa.text("VACUUM ledger_unsequenced"))
        autocommit.execute(sa.text("CHECKPOINT"))


def measure_all(http_client: Http, paths: dict[str, str], samples: int) -> dict[str, Timing]:
    """Each read `samples` times, taken in turns (read 1, read 2, ..., then again), so a
    disturbance on the machine spreads over every read instead of landing on one."""
    for path in paths.values():
        http_client.timed(path)  # warm: connection, plan cache
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(samples):
        for name, path in paths.items():
            times[name].append(http_client.timed(path))
    return {name: _timing(sorted(found)) for name, found in times.items()}


def _timing(times: list[float]) -> Timing:
    return statistics.median(times), times[min(len(times) - 1, int(0.99 * len(times)))]


def download(http_client: Http, export: Path, entries: int, label: str) -> None:
    """GET the whole export into `export`, and print its rate."""
    http_client.connection.close()  # a fresh connection: the last one may have idled out
    started = time.perf_counter()
    http_client.connection.request("GET", "/v1/ledger/export", headers=http_client.headers)
    response = http_client.connection.getresponse()
    assert response.status == 200, response.status
    with export.open("wb") as handle:
        while chunk := response.read(1 << 20):
            handle.write(chunk)
    elapsed = time.perf_counter() - started
    size_mb = export.stat().st_size / 1e6
    print(
        f"export {label}: {entries:,} entries, {size_mb:,.0f} MB in {elapsed:.1f} s "
        f"({entries / elapsed:,.0f} entries/s)"
    )


def export_and_verify(http_client: Http, direct: Http, home: Path, entries: int) -> None:
    export = home / "ledger.jsonl"
    download(direct, export, entries, "direct from the ledger function")
    download(http_client, export, entries, "through the dev gateway")
    status, key = http_client.get("/v1/ledger/public-key")
    assert status == 200
    key_file = home / "ledger-public.pem"
    key_file.write_text(json.loads(key)["public_key"])
    elapsed, summary = timed_verify(export, key_file)
    print(
        f"audit verify:     {entries:,} entries in {elapsed:.1f} s "
        f"({entries / elapsed:,.0f} entries/s)  {summary}"
    )
    export.unlink()


def run(url: str, home: Path, sizes: list[int], samples: int) -> None:
    dev_home = home / "dev"
    dev = start_dev(dev_home, {"HOLDFAST_DATABASE_URL": url, "HOLDFAST_RATE_LIMIT_PER_S": "0"})
    # The bench's own writes use holdfast dev's keys (its home): what they seal, it opens.
    db = local.database(url, dev_home, pool_size=2)
    try:
        http_client = Http(dev.base_url, dev.token("bench", SCOPE))
        ledger = Ledger(db)
        names = list(reads(ledger))
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        reached = []
        work: dict[str, list[tuple[int, float]]] = {}
        for size in sizes:
            ledger.grow_to(size)
            waited = ledger.wait_sealed()
            vacuum_queue(db)
            reached.append(ledger.entries)
            print(
                f"size {ledger.entries:>9,} entries: written at "
                f"{ledger.entries / ledger.write_s:,.0f} entries/s so far, sealed "
                f"{waited:.1f} s after the last write",
                flush=True,
            )
            paths = {name: path() for name, path in reads(ledger).items()}
            for name, timing in measure_all(http_client, paths, samples).items():
                figures[name].append(timing)
            for name, (blocks, ms) in database_work(db, ledger, max(3, samples // 4)).items():
                work.setdefault(name, []).append((blocks, ms))
        print_table(reached, figures)
        print_storage(db, ledger.entries)
        print(f"{'SQL (buffers touched / ms)':<34}")
        for name, row in work.items():
            cells = "".join(f"{f'{b:,} / {ms:.1f}':>17}" for b, ms in row)
            print(f"{name:<34}{cells}   {row[-1][0] / max(row[0][0], 1):.2f}x")
        print()
        direct = Http(dev.functions["ledger"], dev.token("bench", SCOPE))
        export_and_verify(http_client, direct, home, ledger.entries)
    finally:
        db.dispose()
        stop_dev(dev)


def print_table(sizes: list[int], figures: dict[str, list[tuple[float, float]]]) -> None:
    head = "".join(f"{f'{s:,}':>17}" for s in sizes)
    print(f"\n{'read (ms: median / p99)':<34}{head}   largest/smallest")
    for name, row in figures.items():
        cells = "".join(f"{f'{m:.1f} / {p:.1f}':>17}" for m, p in row)
        print(f"{name:<34}{cells}   {row[-1][0] / row[0][0]:.2f}x")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k, 30k and 100k entries")
    parser.add_argument("--sizes", help="comma-separated entry counts (overrides the default)")
    parser.add_argument("--samples", type=int, default=40, help="timed calls of each read")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    sizes = sizes or list(QUICK_SIZES if args.quick else SIZES)
    logging.getLogger("psycopg").setLevel(logging.CRITICAL)
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; sizes {', '.join(f'{s:,}' for s in sizes)}; "
        f"{args.samples} samples a read"
    )
    with tempfile.TemporaryDirectory(prefix="holdfast-bench-growth-") as tmp:
        home = Path(tmp)
        embedded = None
        server_url = os.environ.get("HOLDFAST_DATABASE_URL")
        if not server_url:
            embedded = EmbeddedPostgres(home / "db")
            server_url = embedded.start()
        try:
            run(fresh_database(server_url), home, sizes, args.samples)
        finally:
            if embedded is not None:
                embedded.stop()


if __name__ == "__main__":
    main()
