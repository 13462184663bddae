"""Holdfast's benchmark: transfers per second against two ceilings measured in the same run.

Starts `holdfast dev` on a fresh embedded PostgreSQL, then, one after the other on that server,
with the same number of clients and the same duration for every step:

  1. pgbench tpcb-like at SERIALIZABLE with --max-tries, in its own database (scale >= clients,
     CHECKPOINT after the load): what this server does with a comparable small read-write
     transaction. The usual yardstick.
  2. Holdfast's own reserve and confirm SQL replayed by pgbench (bench/pgbench/
     reserve_confirm.sql: the statements the function sends, random pre-made accounts, same
     isolation, the writes pipelined as the function does), in its own freshly migrated
     database: the ceiling of our schema, with no Python and no HTTP in the way.
  3. The product over HTTP, driven by wrk (bench/wrk/transfers.lua; one thread, one
     connection and one operator token per client), through the dev gateway and direct to
     the transfers function (as Knative routes): reserve+confirm on accounts drawn at random,
     the same on one hot debit account, reserve alone (its latency from wrk's histogram),
     immediate transfers through the batch endpoint. Before each of these steps the
     background work the last one caused is let finish (the ledger seals its queue, the
     relay publishes the outbox) and PostgreSQL checkpoints: no step pays for another.
  4. Cold start to the first authenticated answer (bench/cold_start.py's measurement).

Every product figure is printed as a fraction of both baselines, with the CPU each process
used, and the targets of issue #13 are printed PASS or MISS. Ratios come from ONE run, so a
busy machine depresses both sides; absolute figures from a shared machine are not.
`--quick` runs each step 3 s. Nothing here asserts a speed: it prints figures.

    .venv/bin/python bench/run.py [--quick] [--clients 8] [--seconds 20]
    WORKERS=2 .venv/bin/python bench/run.py   # a lever: gunicorn workers per function
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from tests.e2e.conftest import Dev, start_dev, stop_dev  # noqa: E402

WRK_SCRIPT = ROOT / "bench" / "wrk" / "transfers.lua"
SCHEMA_SCRIPT = ROOT / "bench" / "pgbench" / "reserve_confirm.sql"
OPS_SCOPE = "accounts:read accounts:write transfers:read transfers:write operator"
POOL_ACCOUNTS = 256  # accounts drawn at random (product and schema replay alike)
BATCH_CLIENTS, BATCH_SIZE = 4, 500
MAX_TRIES = 20
# Issue #13's targets: (label, figure name, threshold, higher is better).
TARGETS = (
    ("reserve+confirm spread >= 0.35 x tpcb", "spread_vs_tpcb", 0.35, True),
    ("reserve p99 < 25 ms", "reserve_p99_ms", 25.0, False),
    ("hot account >= 0.8 x spread", "hot_vs_spread", 0.8, True),
    ("batch >= 4 x tpcb", "batch_vs_tpcb", 4.0, True),
    ("cold start to first authenticated answer < 0.5 s", "cold_start_s", 0.5, False),
)


# -- CPU accounting ----------------------------------------------------------------------


def _cpu_s(pid: int) -> float:
    """User + system CPU of one process so far, with that of its children it has reaped
    (PostgreSQL's backends that ended during a step count at the postmaster)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                pending.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
    return found


@dataclass
class Processes:
    """The processes whose CPU a step is charged: each function, the gateway, PostgreSQL."""

    dev: Dev

    def groups(self) -> dict[str, list[int]]:
        gateway = self.dev.process.pid
        groups: dict[str, list[int]] = {"gateway": [gateway]}
        for child in _tree(gateway)[1:]:
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            target = next((c for c in command if c.startswith(b"--target=")), None)
            if target:
                groups.setdefault(target.decode().removeprefix("--target="), []).append(child)
        postmaster = int((self.dev.home / "pgdata" / "postmaster.pid").read_text().split()[0])
        groups["postgres"] = _tree(postmaster)
        return groups

    def sample(self) -> dict[str, float]:
        return {name: sum(map(_cpu_s, pids)) for name, pids in self.groups().items()}


def measured(
    processes: Processes, step: Callable[..., dict[str, float]], *args: Any, **kwargs: Any
) -> dict[str, float]:
    """Run step(*args, **kwargs); add the CPU seconds per wall second each group used."""
    before, started = processes.sample(), time.perf_counter()
    children_before = os.times().children_user + os.times().children_system
    figures = step(*args, **kwargs)
    elapsed = time.perf_counter() - started
    after = processes.sample()
    children = os.times().children_user + os.times().children_system - children_before
    for name, cpu in after.items():
        figures[f"cpu_s_{name}"] = cpu - before.get(name, cpu)
    figures["cpu_s_load_generator"] = children  # wrk or pgbench (waited-for children)
    for name in [k.removeprefix("cpu_s_") for k in figures if k.startswith("cpu_s_")]:
        figures[f"cpu_{name}"] = figures[f"cpu_s_{name}"] / elapsed
    return figures


# -- PostgreSQL: the two baselines --------------------------------------------------------


@dataclass
class Postgres:
    dev: Dev
    processes: Processes

    @property
    def bin_dir(self) -> Path:
        from holdfast.adapters.database import EmbeddedPostgres

        return EmbeddedPostgres(self.dev.home).bin_dir

    def env(self, database: str) -> dict[str, str]:
        return {
            **os.environ,
            "PGHOST": str(self.dev.home / "pgdata"),
            "PGUSER": "postgres",
            "PGDATABASE": database,
            "PGOPTIONS": "-c default_transaction_isolation=serializable",
        }

    def psql(self, database: str, *statements: str) -> None:
        command = [str(self.bin_dir / "psql"), "-q", "-v", "ON_ERROR_STOP=1"]
        for statement in statements:
            command += ["-c", statement]
        subprocess.run(command, env=self.env(database), check=True, capture_output=True)

    def scalar(self, database: str, query: str) -> str:
        command = [str(self.bin_dir / "psql"), "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", query]
        done = subprocess.run(command, env=self.env(database), check=True, capture_output=True)
        return done.stdout.decode().strip()

    def create(self, database: str) -> None:
        self.psql("postgres", f"DROP DATABASE IF EXISTS {database}", f"CREATE DATABASE {database}")

    def pgbench(self, database: str, *args: str) -> dict[str, float]:
        """A pgbench run, with the CPU each process used during it (not during the setup)."""
        return measured(self.processes, self._pgbench, database, *args)

    def _pgbench(self, database: str, *args: str) -> dict[str, float]:
        result = subprocess.run(
            [str(self.bin_dir / "pgbench"), "-n", f"--max-tries={MAX_TRIES}", *args],
            env=self.env(database),
            check=False,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pgbench failed:\n{result.stdout}\n{result.stderr}")
        tps = re.search(r"tps = ([\d.]+)", result.stdout)
        retried = re.search(r"number of transactions retried: (\d+)", result.stdout)
        failed = re.search(r"number of failed transactions: (\d+)", result.stdout)
        latency = re.search(r"latency average = ([\d.]+) ms", result.stdout)
        assert tps, result.stdout + result.stderr
        return {
            "tps": float(tps.group(1)),
            "retried": float(retried.group(1)) if retried else 0.0,
            "failed": float(failed.group(1)) if failed else 0.0,
            "latency_ms": float(latency.group(1)) if latency else float("nan"),
        }


def tpcb(pg: Postgres, clients: int, seconds: int) -> dict[str, float]:
    """tpcb-like in its own database, scale >= clients (one branch row per client), after a
    CHECKPOINT so that the load's dirty pages are not written during the run."""
    pg.create("bench_tpcb")
    scale = max(10, clients)
    subprocess.run(
        [str(pg.bin_dir / "pgbench"), "-i", "-q", "-s", str(scale)],
        env=pg.env("bench_tpcb"),
        check=True,
        capture_output=True,
    )
    pg.psql("bench_tpcb", "VACUUM ANALYZE", "CHECKPOINT")
    figures = pg.pgbench(
        "bench_tpcb", "-b", "tpcb-like", "-c", str(clients), "-j", "2", "-T", str(seconds)
    )
    figures["scale"] = scale
    return figures


def schema_replay(pg: Postgres, clients: int, seconds: int) -> dict[str, float]:
    """Holdfast's reserve+confirm statements by pgbench, in a freshly migrated database: with
    `clients` connections, and with one (a single writer, as group commit makes each process)."""
    from holdfast.adapters.database import create_engine, migrate

    pg.create("bench_schema")
    url = f"postgresql://postgres@/bench_schema?host={pg.dev.home / 'pgdata'}"
    engine = create_engine(url, pool_size=1)
    migrate(engine)
    engine.dispose()
    pg.psql(
        "bench_schema",
        "INSERT INTO accounts (id, currency, owner, status, normal_balance, overdraft_limit, "
        "debits_posted, credits_posted, debits_reserved, credits_reserved, metadata, created_at, "
        "updated_at) SELECT CAST(lpad(to_hex(i), 32, '0') AS UUID), 'EUR', 'bench', 'open', "
        "'credit', NULL, 0, 0, 0, 0, '{}', now(), now() "
        f"FROM generate_series(1, {POOL_ACCOUNTS}) AS i",
        "VACUUM ANALYZE",
        "CHECKPOINT",
    )
    figures = replay(pg, clients, seconds)
    alone = replay(pg, 1, seconds, first_id=10**9)  # ids not taken by the run before
    figures["one_writer_pairs_per_s"] = alone["tps"] / 2
    figures["one_writer_latency_ms"] = alone["latency_ms"]
    return figures


def replay(pg: Postgres, clients: int, seconds: int, first_id: int = 0) -> dict[str, float]:
    figures = pg.pgbench(
        "bench_schema",
        "-f",
        str(SCHEMA_SCRIPT),
        "-M",
        os.environ.get(
            "SPEED_MODE", "prepared"
        ),  # psycopg prepares a statement from its 5th use on a connection
        "-D",
        f"accounts={POOL_ACCOUNTS}",
        "-D",
        "phase=0",
        "-D",
        f"n={first_id}",
        "-c",
        str(clients),
        "-j",
        "2",
        "-T",
        str(seconds),
    )
    figures["pairs_per_s"] = figures["tps"] / 2  # a reserve and a confirm per pair
    return figures


# -- the product over HTTP ---------------------------------------------------------------


def open_accounts(base_url: str, token: str, count: int) -> list[str]:
    """`count` EUR accounts with unlimited overdraft (no funding needed), 8 at a time."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    headers = {"Authorization": f"Bearer {token}"}

    def open_some(part: list[str]) -> None:
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
            for account_id in part:
                body = {
                    "id": account_id,
                    "currency": "EUR",
                    "owner": "bench",
                    "overdraft_limit": None,
                }
                for _ in range(10):  # 503 "try again" (retries exhausted): as a client would
                    response = client.post("/v1/accounts", json=body)
                    if response.status_code != 503:
                        break
                    time.sleep(0.1)
                assert response.status_code in (200, 201), response.text
                opened.append(account_id)

    opened: list[str] = []
    workers = [threading.Thread(target=open_some, args=(ids[i::8],)) for i in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(opened) == count, f"opened {len(opened)} of {count} accounts"
    return ids


def wrk(
    url: str,
    tokens: list[str],
    seconds: float,
    mode: str,
    accounts: list[str],
    *,
    hot: str | None = None,
    clients: int | None = None,
) -> dict[str, float]:
    clients = clients or len(tokens)
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as config:
        config.write(f"mode {mode}\nbatch {BATCH_SIZE}\n")
        if hot:
            config.write(f"hot {hot}\n")
        config.writelines(f"token {t}\n" for t in tokens[:clients])
        config.writelines(f"account {a}\n" for a in accounts)
    try:
        result = subprocess.run(
            [
                wrk_binary(),
                f"-t{clients}",
                f"-c{clients}",
                f"-d{max(1, round(seconds))}s",
                "--timeout=10s",
                "-s",
                str(WRK_SCRIPT),
                url,
            ],
            env={**os.environ, "HOLDFAST_WRK_CONFIG": config.name},
            check=True,
            capture_output=True,
            text=True,
        )
    finally:
        os.unlink(config.name)
    settle(url, tokens[0], accounts)
    line = next((x for x in result.stdout.splitlines() if x.startswith("HOLDFAST ")), None)
    assert line, result.stdout + result.stderr
    figures: dict[str, float] = json.loads(line.removeprefix("HOLDFAST "))
    figures["pairs_per_s"] = figures["pairs"] / figures["duration_s"]
    figures["transfers_per_s"] = figures["transfers"] / figures["duration_s"]
    figures["requests_per_s"] = figures["requests"] / figures["duration_s"]
    return figures


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def settle(url: str, token: str, account_ids: list[str]) -> None:
    """Wait until the function has finished what a step left queued (a batch still being
    written when wrk closed its connections): one reserve, which queues behind it."""
    body = {
        "id": str(uuid.uuid4()),
        "debit_account_id": account_ids[0],
        "credit_account_id": account_ids[1],
        "amount": 1,
        "currency": "EUR",
        "timeout_s": 1,
    }
    headers = {"Authorization": f"Bearer {token}"}
    response = httpx.post(f"{url}/v1/transfers", json=body, headers=headers, timeout=120)
    assert response.status_code == 201, response.text


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    return found


# -- report ------------------------------------------------------------------------------


def cpu_text(figures: dict[str, float]) -> str:
    names = [k.removeprefix("cpu_s_") for k in figures if k.startswith("cpu_s_")]
    shown = [n for n in names if figures[f"cpu_{n}"] >= 0.005]
    return "CPU cores: " + ", ".join(f"{n} {figures[f'cpu_{n}']:.2f}" for n in shown)


def server_cpu_s(figures: dict[str, float]) -> float:
    """CPU seconds the server side used in a step (functions, gateway, PostgreSQL; not the
    load generator), including work a step left queued and `settle` waited for."""
    return sum(
        v for k, v in figures.items() if k.startswith("cpu_s_") and k != "cpu_s_load_generator"
    )


def cold_start_s(runs: int) -> float:
    """Median process start -> first authenticated answer of the transfers function."""
    import cold_start

    with cold_start.staged() as stage:
        cold_start.cold_start(stage, "transfers")  # warm the page cache once, as a node is
        return statistics.median(
            cold_start.cold_start(stage, "transfers").first_call_s for _ in range(runs)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per step")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--skip-direct", action="store_true", help="only via the gateway")
    args = parser.parse_args()
    seconds = 3 if args.quick else args.seconds
    clients = args.clients
    home = Path(tempfile.mkdtemp(prefix="holdfast-bench-"))
    lever = {k: v for k, v in os.environ.items() if k in {"THREADS", "WORKERS"}}
    dev = start_dev(home, lever)
    try:
        run(dev, clients, seconds, args, lever)
    finally:
        stop_dev(dev)
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class Baselines:
    tpcb_tx_per_s: float
    own_sql_pairs_per_s: float


def run(
    dev: Dev, clients: int, seconds: int, args: argparse.Namespace, lever: dict[str, str]
) -> None:
    tokens = [dev.token(f"bench-{i}", OPS_SCOPE) for i in range(max(clients, BATCH_CLIENTS))]
    pools = {
        pool: open_accounts(dev.base_url, tokens[0], POOL_ACCOUNTS)
        for pool in ("spread", "reserve-gateway", "reserve-direct")
    }
    pools["hot"] = open_accounts(dev.base_url, tokens[0], 1)
    processes = Processes(dev)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {load}; {clients} clients, {seconds} s per "
        f"step; {lever or 'defaults'} (WORKERS/THREADS per function)"
    )
    pg = Postgres(dev, processes)
    baselines = measure_baselines(pg, clients, seconds)
    results: dict[str, float] = {}
    routes = [("via the dev gateway", dev.base_url, "gateway")]
    if not args.skip_direct:
        routes.append(("direct to the transfers function", dev.functions["transfers"], "direct"))
    for title, url, key in routes:
        print(f"-- {title} ({url})")
        figures = product(pg, processes, baselines, url, tokens, seconds, pools, key)
        results.update({f"{key}_{name}": value for name, value in figures.items()})
    cold = cold_start_s(3 if args.quick else 7)
    print(f"cold start of the transfers function to its first authenticated answer: {cold:.3f} s")
    results["gateway_cold_start_s"] = results["direct_cold_start_s"] = cold
    print("targets (issue #13; ratios from this one run):")
    for label, name, threshold, higher in TARGETS:
        for _, _, key in routes:
            value = results[f"{key}_{name}"]
            ok = value >= threshold if higher else value < threshold
            print(f"  {'PASS' if ok else 'MISS'}  {label:<50} {key:<8} {value:8.3f}")


BACKLOG = (
    "SELECT (SELECT count(*) FROM ledger_unsequenced) "
    "+ (SELECT count(*) FROM outbox WHERE published_at IS NULL)"
)
QUIESCE_TIMEOUT_S = 120.0


def quiesced(pg: Postgres) -> None:
    """Before each product step: let the background work the previous step caused finish
    (the ledger seals its queue, the relay publishes the outbox), then CHECKPOINT. Without
    it, the step after the batch step (60,000 transfers) was charged their sealing,
    publishing and dirty pages: PostgreSQL used 0.62 of a core there against 0.36 in the
    next step, and the route's first pair rate read about 20 % low."""
    deadline = time.monotonic() + QUIESCE_TIMEOUT_S
    while (backlog := int(pg.scalar("holdfast", BACKLOG))) > 0:
        if time.monotonic() > deadline:
            print(f"  (still {backlog} entries to seal or events to publish; measuring anyway)")
            break
        time.sleep(0.5)
    pg.psql("holdfast", "CHECKPOINT")


def measure_baselines(pg: Postgres, clients: int, seconds: int) -> Baselines:
    base = tpcb(pg, clients, seconds)
    print(
        f"baseline tpcb-like, scale {base['scale']:.0f}, SERIALIZABLE --max-tries={MAX_TRIES}: "
        f"{base['tps']:8.1f} tx/s  (retried {base['retried']:.0f}, failed {base['failed']:.0f}; "
        f"{cpu_text(base)})"
    )
    schema = schema_replay(pg, clients, seconds)
    print(
        f"baseline Holdfast's own SQL by pgbench: {schema['pairs_per_s']:8.1f} reserve+confirm "
        f"pairs/s ({schema['tps']:.1f} tx/s, {schema['tps'] / base['tps']:.2f} x tpcb; retried "
        f"{schema['retried']:.0f}, failed {schema['failed']:.0f}; {cpu_text(schema)}); "
        f"one connection alone: {schema['one_writer_pairs_per_s']:.1f} pairs/s"
    )
    pg.psql("holdfast", "CHECKPOINT")
    return Baselines(base["tps"], schema["pairs_per_s"])


def product(
    pg: Postgres,
    processes: Processes,
    baselines: Baselines,
    url: str,
    tokens: list[str],
    seconds: int,
    pools: dict[str, list[str]],
    key: str,
) -> dict[str, float]:
    """The four HTTP steps on one route; returns the figures the targets read."""

    def line(name: str, per_s: float, unit: str, figures: dict[str, float], extra: str) -> None:
        done = figures["pairs"] if unit == "pairs/s" else figures["transfers"]
        own = per_s / baselines.own_sql_pairs_per_s if unit == "pairs/s" else None
        print(
            f"  {name:<34} {per_s:8.1f} {unit:<12} {per_s / baselines.tpcb_tx_per_s:5.2f} x tpcb "
            + (f"{own:5.2f} x own SQL  " if own is not None else " " * 18)
            + extra
        )
        print(
            f"  {'':<34} {cpu_text(figures)}; {done / max(server_cpu_s(figures), 1e-9):.0f} "
            f"{unit.removesuffix('/s')} per server CPU-second"
        )

    quiesced(pg)
    spread = measured(processes, wrk, url, tokens, seconds, "pair", pools["spread"])
    line(
        "reserve+confirm, random accounts",
        spread["pairs_per_s"],
        "pairs/s",
        spread,
        f"latency p50 {spread['p50_ms']:.1f} p99 {spread['p99_ms']:.1f} ms; failures "
        f"{spread['failures'] + spread['errors']:.0f}",
    )
    quiesced(pg)
    hot = measured(
        processes, wrk, url, tokens, seconds, "pair", pools["spread"], hot=pools["hot"][0]
    )
    line(
        "reserve+confirm, one hot debit",
        hot["pairs_per_s"],
        "pairs/s",
        hot,
        f"{ratio(hot['pairs_per_s'], spread['pairs_per_s']):.2f} x spread; p99 "
        f"{hot['p99_ms']:.1f} ms; failures {hot['failures'] + hot['errors']:.0f}",
    )
    quiesced(pg)
    reserve = measured(processes, wrk, url, tokens, seconds, "reserve", pools[f"reserve-{key}"])
    line(
        "reserve only",
        reserve["transfers_per_s"],
        "reserves/s",
        reserve,
        f"reserve p50 {reserve['p50_ms']:.1f} p90 {reserve['p90_ms']:.1f} p99 "
        f"{reserve['p99_ms']:.1f} ms",
    )
    quiesced(pg)
    batch = measured(
        processes, wrk, url, tokens, seconds, "batch", pools["spread"], clients=BATCH_CLIENTS
    )
    line(
        f"immediate via batch ({BATCH_CLIENTS} x {BATCH_SIZE})",
        batch["transfers_per_s"],
        "transfers/s",
        batch,
        f"request p99 {batch['p99_ms']:.0f} ms; failures {batch['failures']:.0f}",
    )
    return {
        "spread_vs_tpcb": spread["pairs_per_s"] / baselines.tpcb_tx_per_s,
        "reserve_p99_ms": reserve["p99_ms"],
        "hot_vs_spread": ratio(hot["pairs_per_s"], spread["pairs_per_s"]),
        "batch_vs_tpcb": batch["transfers_per_s"] / baselines.tpcb_tx_per_s,
        "pairs_per_server_cpu_s": spread["pairs"] / max(server_cpu_s(spread), 1e-9),
    }


if __name__ == "__main__":
    main()
