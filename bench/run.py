"""Holdfast's benchmark: transfers per second against the database's own ceiling.

Starts `holdfast dev` on a fresh embedded PostgreSQL, then, in one run on the same server:
  1. pgbench -b tpcb-like at SERIALIZABLE with --max-tries (the baseline: what this database
     does per second with a comparable small read-write transaction),
  2. reserve + confirm over HTTP through the gateway with N concurrent clients, spread over
     many accounts, with p50/p99 latency of each call,
  3. the same on one hot account,
  4. reserve latency at 8 concurrent clients,
  5. immediate transfers through the batch endpoint,
and prints each figure with its ratio to the baseline. `--quick` finishes in under a minute.

This is a script that prints figures, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.e2e.conftest import Dev, start_dev, stop_dev  # noqa: E402

OPS_SCOPE = "accounts:read accounts:write transfers:read transfers:write operator"


@dataclass
class Client:
    """One keep-alive HTTP connection with a token (one per load thread)."""

    base_url: str
    token: str
    connection: http.client.HTTPConnection = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        self.connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)

    def post(self, path: str, body: object) -> tuple[int, dict[str, object]]:
        payload = json.dumps(body).encode()
        self.connection.request(
            "POST",
            path,
            body=payload,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        response = self.connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else {}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def open_accounts(client: Client, count: int, funding: str, amount: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    for account_id in ids:
        status, body = client.post(
            "/v1/accounts", {"id": account_id, "currency": "EUR", "owner": "bench"}
        )
        assert status == 201, body
    operations = [
        {
            "op": "reserve",
            "id": str(uuid.uuid4()),
            "debit_account_id": funding,
            "credit_account_id": a,
            "amount": amount,
            "currency": "EUR",
            "immediate": True,
        }
        for a in ids
    ]
    for start in range(0, len(operations), 500):
        status, body = client.post(
            "/v1/transfers:batch", {"operations": operations[start : start + 500]}
        )
        assert status == 200, body
    return ids


def pgbench(dev: Dev, clients: int, seconds: int) -> float:
    """tpcb-like TPS at SERIALIZABLE with retries, on the same server as Holdfast."""
    from holdfast.adapters.database import EmbeddedPostgres

    bin_dir = EmbeddedPostgres(dev.home).bin_dir
    socket_dir = dev.home / "pgdata"
    env = {
        **os.environ,
        "PGHOST": str(socket_dir),
        "PGUSER": "postgres",
        "PGDATABASE": "holdfast",
        "PGOPTIONS": "-c default_transaction_isolation=serializable",
    }
    subprocess.run(
        [str(bin_dir / "pgbench"), "-i", "-q", "-s", "10"], env=env, check=True, capture_output=True
    )
    result = subprocess.run(
        [
            str(bin_dir / "pgbench"),
            "-b",
            "tpcb-like",
            "-c",
            str(clients),
            "-j",
            "2",
            "-T",
            str(seconds),
            "--max-tries=20",
            "-n",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    match = re.search(r"tps = ([\d.]+)", result.stdout)
    assert match, result.stdout
    return float(match.group(1))


def run_load(
    base_url: str,
    token: str,
    clients: int,
    seconds: float,
    debit_for: list[str],
    credits: list[str],
    *,
    confirm: bool = True,
) -> dict[str, float]:
    """Each client loops reserve (+ confirm) for `seconds`; returns rate and latencies."""
    reserve_ms: list[float] = []
    confirm_ms: list[float] = []
    done = [0]
    failures = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(index: int) -> None:
        client = Client(base_url, token)
        local_r: list[float] = []
        local_c: list[float] = []
        n = fails = 0
        debit = debit_for[index % len(debit_for)]
        credit = credits[index % len(credits)]
        while time.perf_counter() < deadline:
            transfer_id = str(uuid.uuid4())
            t0 = time.perf_counter()
            status, _ = client.post(
                "/v1/transfers",
                {
                    "id": transfer_id,
                    "debit_account_id": debit,
                    "credit_account_id": credit,
                    "amount": 1,
                    "currency": "EUR",
                },
            )
            t1 = time.perf_counter()
            local_r.append((t1 - t0) * 1000)
            if status != 201:
                fails += 1
                continue
            if confirm:
                status, _ = client.post(f"/v1/transfers/{transfer_id}/confirm", {})
                local_c.append((time.perf_counter() - t1) * 1000)
                if status != 200:
                    fails += 1
                    continue
            n += 1
        with lock:
            reserve_ms.extend(local_r)
            confirm_ms.extend(local_c)
            done[0] += n
            failures[0] += fails

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {
        "per_s": done[0] / elapsed,
        "failures": failures[0],
        "reserve_p50": percentile(reserve_ms, 0.5),
        "reserve_p99": percentile(reserve_ms, 0.99),
        "confirm_p50": percentile(confirm_ms, 0.5),
        "confirm_p99": percentile(confirm_ms, 0.99),
    }


def run_batches(
    base_url: str,
    token: str,
    clients: int,
    seconds: float,
    debits: list[str],
    credits: list[str],
    size: int,
) -> float:
    done = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(index: int) -> None:
        client = Client(base_url, token)
        n = 0
        while time.perf_counter() < deadline:
            operations = [
                {
                    "op": "reserve",
                    "id": str(uuid.uuid4()),
                    "debit_account_id": debits[(index + i) % len(debits)],
                    "credit_account_id": credits[(index + i) % len(credits)],
                    "amount": 1,
                    "currency": "EUR",
                    "immediate": True,
                }
                for i in range(size)
            ]
            status, body = client.post("/v1/transfers:batch", {"operations": operations})
            assert status == 200, body
            results: list[dict[str, object]] = body["results"]  # type: ignore[assignment]
            n += sum(1 for r in results if r.get("state") == "confirmed")
        with lock:
            done[0] += n

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done[0] / (time.perf_counter() - started)


def extra_env() -> dict[str, str]:
    """Pass THREADS (gunicorn threads per function) through when the caller sets it."""
    return {k: v for k, v in os.environ.items() if k in {"THREADS", "WORKERS"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs: under a minute")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    home = Path(tempfile.mkdtemp(prefix="holdfast-bench-"))
    # One token drives all the load: lift the per-token rate limit for the benchmark.
    dev = start_dev(
        home, {"HOLDFAST_DB_POOL_SIZE": "8", "HOLDFAST_RATE_LIMIT_PER_S": "0", **extra_env()}
    )
    try:
        token = dev.token("bench", OPS_SCOPE)
        setup = Client(dev.base_url, token)
        funding = str(uuid.uuid4())
        setup.post(
            "/v1/accounts",
            {"id": funding, "currency": "EUR", "owner": "bench", "overdraft_limit": None},
        )
        customers = open_accounts(setup, max(args.clients, 8) * 2, funding, 10**12)
        payees = open_accounts(setup, 16, funding, 1)
        hot = str(uuid.uuid4())
        setup.post(
            "/v1/accounts",
            {"id": hot, "currency": "EUR", "owner": "bench", "overdraft_limit": None},
        )

        print(
            f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}; {args.clients} clients, {seconds:.0f} s per run"
        )
        baseline = pgbench(dev, args.clients, int(seconds))
        print(f"baseline  pgbench tpcb-like SERIALIZABLE --max-tries=20: {baseline:9.1f} tx/s")

        def line(name: str, per_s: float, extra: str = "") -> None:
            print(f"{name:<44} {per_s:9.1f} /s  {per_s / baseline:5.2f} x baseline  {extra}")

        gateway, direct = dev.base_url, dev.functions["transfers"]
        for route, url in (("via the dev gateway", gateway), ("direct to the function", direct)):
            print(f"-- {route} ({url})")
            spread = run_load(url, token, args.clients, seconds, customers, payees)
            line(
                "reserve+confirm over HTTP, spread accounts",
                spread["per_s"],
                f"reserve p50 {spread['reserve_p50']:.1f} ms p99 {spread['reserve_p99']:.1f} ms;"
                f" confirm p50 {spread['confirm_p50']:.1f} ms p99 {spread['confirm_p99']:.1f} ms;"
                f" failures {spread['failures']:.0f}",
            )
            hot_run = run_load(url, token, args.clients, seconds, [hot], payees)
            line(
                "reserve+confirm over HTTP, one hot account",
                hot_run["per_s"],
                f"{hot_run['per_s'] / spread['per_s']:.2f} x spread; reserve p99 "
                f"{hot_run['reserve_p99']:.1f} ms; failures {hot_run['failures']:.0f}",
            )
            eight = run_load(url, token, 8, seconds, customers, payees, confirm=False)
            line(
                "reserve only, 8 clients",
                eight["per_s"],
                f"reserve p50 {eight['reserve_p50']:.1f} ms p99 {eight['reserve_p99']:.1f} ms",
            )
            batch = run_batches(url, token, 4, seconds, customers, payees, 500)
            line("immediate transfers via batch (4 x 500)", batch)
    finally:
        stop_dev(dev)


if __name__ == "__main__":
    main()
