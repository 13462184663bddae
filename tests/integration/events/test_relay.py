"""The outbox relay against a real HTTP sink: attributes, failures, order, leases, crashes."""

from __future__ import annotations

import asyncio
import collections
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from holdfast.adapters import outbox, repository
from holdfast.adapters import relay as outbox_relay
from holdfast.adapters.database import Database, FaultInjector
from holdfast.adapters.relay import Claimed, Failure, HttpPublisher, PublishFailed
from holdfast.domain.errors import TransientError
from holdfast.event_models import dataschema
from holdfast.services.relay import Policy, Relay
from tests.conftest import Api
from tests.integration.events.conftest import (
    FAST,
    Sink,
    drain,
    emit,
    outbox_rows,
    unpublished,
)
from tests.integration.helpers import OPS, funded, open_account

HERE = Path(__file__).resolve().parent


def make_relay(db: Database, sink: Sink, policy: Policy = FAST, name: str = "test") -> Relay:
    return Relay(db, HttpPublisher(sink.url), policy, name=name, rng=random.Random(7))


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_events_of_a_real_transfer_arrive_as_binary_cloudevents(
    db: Database, sink: Sink, accounts_api: Api, transfers_api: Api
) -> None:
    alice = funded(accounts_api, transfers_api, 5_000)
    bob = open_account(accounts_api, owner="bob")
    transfer_id = str(uuid.uuid4())
    reserve = {
        "id": transfer_id,
        "debit_account_id": alice,
        "credit_account_id": bob,
        "amount": 700,
        "currency": "EUR",
    }
    assert transfers_api.call("POST", "/v1/transfers", reserve, **OPS).status_code == 201
    assert (
        transfers_api.call("POST", f"/v1/transfers/{transfer_id}/confirm", **OPS).status_code == 200
    )
    rows = {str(r["id"]): r for r in outbox_rows(db)}

    run(drain(make_relay(db, sink), db))

    got = {r.id: r for r in sink.accepted()}
    assert got.keys() == rows.keys()
    for event_id, row in rows.items():
        headers = got[event_id].headers
        assert headers["ce-specversion"] == "1.0"
        assert headers["ce-type"] == row["type"]
        assert headers["ce-source"] == row["source"]
        assert headers["ce-subject"] == headers["ce-partitionkey"] == row["subject"]
        assert datetime.fromisoformat(headers["ce-time"]) == row["created_at"]
        assert headers["ce-dataschema"] == dataschema(row["type"])
        assert outbox.TRACEPARENT.match(headers["ce-traceparent"])
        # The same trace as the change that wrote the row (a producer span may sit between).
        assert headers["ce-traceparent"] == headers["traceparent"]
        assert headers["ce-traceparent"].split("-")[1] == row["traceparent"].split("-")[1]
        assert headers["content-type"] == "application/json"
        assert got[event_id].data() == row["data"]
    transfer_events = [r.headers["ce-type"] for r in sink.accepted() if r.subject == transfer_id]
    assert transfer_events == [
        "dev.holdfast.transfer.reserved.v1",
        "dev.holdfast.transfer.confirmed.v1",
    ]
    for row in outbox_rows(db):
        assert row["published_at"] is not None
        assert row["lease_owner"] is None and row["lease_until"] is None


@pytest.mark.parametrize("outage", ["http_503", "refused", "timeout"])
def test_relay_survives_the_sink_being_down_and_delivers_everything_after(
    db: Database, sink: Sink, outage: str
) -> None:
    ids = [emit(db, subject, f"e{n}") for n in range(3) for subject in ("a", "b")]
    relay = make_relay(db, sink)
    port = sink.port
    if outage == "http_503":
        sink.status = 503
    elif outage == "refused":
        sink.stop()
    else:
        sink.delay_s = 2 * FAST.send_timeout_s

    async def fail_a_few_times() -> None:
        for _ in range(3):
            step = await relay.step()
            assert step.published == []
            await asyncio.sleep(FAST.backoff_s_max)

    run(fail_a_few_times())
    rows = outbox_rows(db)
    assert unpublished(db) == len(ids)
    heads = [r for r in rows if r["attempts"] > 0]
    assert {r["subject"] for r in heads} == {"a", "b"}, "each subject's first event was tried"
    assert all(r["attempts"] == 0 for r in rows if r not in heads), "later events waited"
    expected_error = {"http_503": "HTTP 503", "refused": "ConnectError", "timeout": "timeout"}
    assert all(expected_error[outage] in r["last_error"] for r in heads)
    assert all(r["next_attempt_at"] > r["created_at"] for r in heads)

    if outage == "refused":
        sink.port = port
        sink.start()
    sink.status, sink.delay_s = 202, 0.0
    run(drain(relay, db))

    accepted = sink.accepted_ids()
    assert set(accepted) == set(ids)
    assert outbox_rows(db)[0]["last_error"] is None
    for subject in ("a", "b"):
        in_order = [r.id for r in sink.accepted() if r.subject == subject]
        assert _dedupe(in_order) == [i for i in ids if i in in_order]


def _dedupe(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def test_backoff_grows_exponentially_is_capped_and_jittered() -> None:
    policy = Policy(backoff_s_first=0.5, backoff_s_max=8.0)
    rng = random.Random(1)
    for failures in range(1, 40):
        cap = min(8.0, 0.5 * 2 ** (failures - 1))
        samples = [policy.backoff_s(failures, rng) for _ in range(50)]
        assert all(cap / 2 <= s <= cap for s in samples)
        assert len(set(samples)) > 1, "jittered"
    with pytest.raises(ValueError, match="lease"):
        Policy(lease_s=1.0, send_timeout_s=1.0)
    with pytest.raises(ValueError, match="batch_max"):
        Policy(batch_max=10_000)


def test_failed_rows_record_attempts_and_a_growing_delay(db: Database, sink: Sink) -> None:
    emit(db, "a", "only")
    sink.status = 500
    policy = Policy(
        lease_s=2.0, send_timeout_s=0.5, clock_margin_s=0.1, backoff_s_first=0.05, backoff_s_max=0.2
    )
    relay = make_relay(db, sink, policy)
    # The delay a failure was given lies between next_attempt_at minus the clock read after
    # the step and minus the one read before it: bounds that hold however slow the machine.
    at_least, at_most = [], []
    for attempt in range(1, 6):
        deadline = time.monotonic() + 30
        while True:
            before = database_now(db)
            if run(relay.step()).failed:
                break
            assert time.monotonic() < deadline, "the row never became due again"
            time.sleep(0.01)
        after = database_now(db)
        row = outbox_rows(db)[0]
        assert row["attempts"] == attempt
        at_least.append((row["next_attempt_at"] - after).total_seconds())
        at_most.append((row["next_attempt_at"] - before).total_seconds())
    cap = [min(0.2, 0.05 * 2 ** (n - 1)) for n in range(1, 6)]
    assert all(d <= c + 0.01 for d, c in zip(at_least, cap, strict=True))
    assert at_most[-1] > cap[0], "the delay grew up to the cap"


def database_now(db: Database) -> datetime:
    with db.engine.connect() as c:
        now: datetime = c.execute(sa.text("SELECT now()")).scalar_one()
    return now


def test_per_subject_order_holds_under_random_failures(db: Database, sink: Sink) -> None:
    subjects = [f"s{n}" for n in range(12)]
    order: dict[str, list[str]] = collections.defaultdict(list)
    for n in range(4):
        for subject in subjects:
            order[subject].append(emit(db, subject, f"e{n}"))
    predecessor = {ids[k]: ids[k - 1] for ids in order.values() for k in range(1, len(ids))}
    accepted: set[str] = set()
    violations: list[str] = []
    chance = random.Random(3)

    def decide(headers: dict[str, str]) -> tuple[int, float]:
        event_id = headers["ce-id"]
        before = predecessor.get(event_id)
        if before is not None and before not in accepted:
            violations.append(event_id)
        if chance.random() < 0.3:
            return 503, 0.0
        accepted.add(event_id)
        return 202, 0.0

    sink.decide = decide
    run(drain(make_relay(db, sink, replace(FAST, batch_max=7)), db))
    assert violations == []
    assert accepted == {i for ids in order.values() for i in ids}
    for subject, ids in order.items():
        assert _dedupe([r.id for r in sink.accepted() if r.subject == subject]) == ids


def test_two_relays_at_once_never_send_the_same_event_concurrently(
    db: Database, sink: Sink
) -> None:
    expected = [emit(db, f"s{n % 25}", f"e{n}") for n in range(150)]
    sink.delay_s = 0.003
    policy = replace(FAST, batch_max=8, concurrency_max=4)
    relays = [make_relay(db, sink, policy, name=f"relay-{n}") for n in range(2)]
    published: dict[str, int] = {}
    errors: list[BaseException] = []

    def work(relay: Relay) -> None:
        async def loop() -> None:
            count = 0
            while unpublished(db):
                sent = len((await relay.step()).published)
                count += sent
                if not sent:
                    await asyncio.sleep(0.005)
            published[relay.name] = count

        try:
            run(asyncio.wait_for(loop(), 60))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(r,)) for r in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sink.overlaps == []
    counts = collections.Counter(sink.accepted_ids())
    assert set(counts) == set(expected)
    assert max(counts.values()) == 1, "no event sent twice"
    assert all(n > 0 for n in published.values()), f"both relays took part: {published}"


def test_a_claim_holds_rows_until_its_lease_ends_and_respects_order(db: Database) -> None:
    a1, a2 = emit(db, "a", "1"), emit(db, "a", "2")
    b1 = emit(db, "b", "1")

    def claim(owner: str) -> list[str]:
        rows = db.run(lambda c: outbox_relay.claim(c, owner, repository.now(c), 30.0))
        return [str(r.id) for r in rows]

    assert claim("x") == [a1, a2, b1]
    assert claim("y") == [], "leased to x"

    def settle(connection: sa.Connection) -> None:
        outbox_relay.settle(
            connection,
            "x",
            repository.now(connection),
            published=[uuid.UUID(b1)],
            failed=[Failure(uuid.UUID(a1), "HTTP 503", 30.0)],
            unsent=[uuid.UUID(a2)],
        )

    db.run(settle)
    assert claim("y") == [], "a1 waits for its backoff, and a2 waits for a1"
    db.run(lambda c: c.execute(sa.text("UPDATE outbox SET next_attempt_at = now()")))
    assert claim("y") == [a1, a2]
    # A stale holder cannot disturb the new one: x's failure report is ignored.
    db.run(
        lambda c: outbox_relay.settle(
            c,
            "x",
            repository.now(c),
            published=[],
            failed=[Failure(uuid.UUID(a2), "late", 99)],
            unsent=[],
        )
    )
    row = {str(r["id"]): r for r in outbox_rows(db)}[a2]
    assert row["lease_owner"] == "y" and row["attempts"] == 0


def test_a_relay_stops_sending_before_its_lease_can_end(db: Database) -> None:
    ids = [emit(db, "a", f"e{n}") for n in range(6)]
    now = [0.0]

    class SlowPublisher:
        sent: list[str] = []

        async def publish(self, row: Claimed, timeout_s: float) -> None:
            self.sent.append(str(row.id))
            now[0] += 0.3  # each send takes 0.3 s of the relay's clock

    policy = Policy(lease_s=1.0, send_timeout_s=0.3, clock_margin_s=0.1)
    relay = Relay(db, SlowPublisher(), policy, clock=lambda: now[0])
    step = run(relay.step())
    # deadline 0.9: sends start at 0.0, 0.3 and 0.6 (each ends by 0.9), not at 0.9
    assert SlowPublisher.sent == ids[:3]
    assert [str(i) for i in step.unsent] == ids[3:]
    rows = outbox_rows(db)
    assert [r["published_at"] is not None for r in rows] == [True] * 3 + [False] * 3
    assert all(r["lease_owner"] is None for r in rows), "the unsent rows were given back"


def test_a_relay_thread_that_dies_after_claiming_loses_nothing(db: Database, sink: Sink) -> None:
    ids = [emit(db, "a", f"e{n}") for n in range(5)]
    # A lease long enough that a stalled machine cannot end it before the next line looks.
    doomed = Relay(db, HttpPublisher(sink.url), replace(FAST, lease_s=3.0))
    _, _, claimed = doomed.claim()  # ... and dies before sending or settling
    assert len(claimed) == 5
    survivor = make_relay(db, sink)
    assert run(survivor.step()).claimed == 0, "the lease still holds"
    time.sleep(3.0)
    run(drain(survivor, db))
    assert sink.accepted_ids() == ids


def test_a_relay_process_killed_mid_batch_loses_nothing(
    db: Database, sink: Sink, database_url: str
) -> None:
    ids = [emit(db, "a", f"e{n}") for n in range(5)] + [emit(db, "b", "e0")]
    first_request = threading.Event()

    def decide(headers: dict[str, str]) -> tuple[int, float]:
        if not first_request.is_set():
            first_request.set()
            return 503, 3.0  # hangs while the process is killed
        return 202, 0.0

    sink.decide = decide
    process = subprocess.Popen(
        [sys.executable, str(HERE / "relay_process.py"), database_url, sink.url, "1.5"],
        env={**os.environ, "PYTHONPATH": str(HERE.parents[2])},
    )
    try:
        assert first_request.wait(30), "the relay process never sent"
        time.sleep(0.1)
        leased = [r for r in outbox_rows(db) if r["lease_owner"]]
        assert leased, "the killed relay held leases"
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    survivor = make_relay(db, sink)
    run(drain(survivor, db, timeout_s=30))
    accepted = sink.accepted_ids()
    assert set(accepted) == set(ids)
    assert _dedupe([i for i in accepted if i in ids[:5]]) == ids[:5]


def test_a_rolled_back_transaction_emits_nothing(
    db: Database, sink: Sink, database_url: str
) -> None:
    event = outbox.OutboundEvent("dev.holdfast.test.v1", "/tests", "s", {"n": 1})

    def work(connection: sa.Connection) -> None:
        outbox.append(connection, [event], repository.now(connection))
        raise RuntimeError("the use case failed after writing its event")

    with pytest.raises(RuntimeError):
        db.run(work)
    flaky = Database(db.engine, cipher=None, attempts_max=2, faults=FaultInjector(1.0))
    with pytest.raises(TransientError):
        flaky.run(lambda c: outbox.append(c, [event], repository.now(c)))
    assert outbox_rows(db) == []
    run(make_relay(db, sink).step())
    assert sink.requests == []


def test_prune_deletes_only_old_published_rows_in_bounded_batches(db: Database, sink: Sink) -> None:
    for n in range(7):
        emit(db, f"s{n}", "e")
    run(drain(make_relay(db, sink), db))
    sink.status = 503
    kept = emit(db, "late", "e")
    policy = replace(FAST, retention_s=0.0, prune_batch_max=2, prune_rounds_max=2)
    relay = make_relay(db, sink, policy)
    run(relay.step())  # fails: stays unpublished
    assert relay.prune() == 4
    assert relay.prune() == 3
    assert relay.prune() == 0
    assert [str(r["id"]) for r in outbox_rows(db)] == [kept]
    keep_long = make_relay(db, sink, replace(FAST, retention_s=3600.0))
    sink.status = 202
    run(drain(keep_long, db))
    assert keep_long.prune() == 0, "published rows are kept for the retention"


def test_the_relay_loop_runs_until_stopped_and_survives_a_database_outage(
    db: Database, sink: Sink
) -> None:
    ids = [emit(db, "a", f"e{n}") for n in range(3)]
    relay = make_relay(db, sink)
    real_claim = relay.claim
    calls = [0]

    def failing_claim() -> tuple[str, float, list[Claimed]]:
        calls[0] += 1
        if calls[0] <= 2:
            raise TransientError("database unavailable")
        return real_claim()

    relay.claim = failing_claim  # type: ignore[method-assign]

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(relay.run(stop))
        deadline = time.monotonic() + 10
        while len(sink.accepted()) < len(ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 5)

    run(main())
    assert calls[0] > 2
    assert sink.accepted_ids() == ids


def test_http_publisher_fails_on_anything_but_2xx(sink: Sink) -> None:
    row = Claimed(uuid.uuid4(), "t.v1", "/s", "subj", {}, None, datetime.now().astimezone(), 0, 0)
    publisher = HttpPublisher(sink.url)

    async def attempt(status: int) -> str | None:
        sink.status = status
        try:
            await publisher.publish(row, 1.0)
        except PublishFailed as error:
            return str(error)
        return None

    async def main() -> list[str | None]:
        try:
            return [await attempt(s) for s in (200, 202, 204, 301, 400, 404, 429, 500)]
        finally:
            await publisher.aclose()

    outcomes = run(main())
    assert outcomes[:3] == [None, None, None]
    assert all(o and re.match(r"HTTP \d{3}", o) for o in outcomes[3:])
