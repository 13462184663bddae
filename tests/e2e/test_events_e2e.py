"""Events through a real `holdfast dev`: its relay publishes to a real HTTP sink (K_SINK), and
CloudEvents sent to its `POST /events` ingress reach the functions by the Knative Triggers."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from holdfast.adapters.outbox import TRACEPARENT
from holdfast.event_models import dataschema
from tests.conftest import state_dir
from tests.e2e.conftest import Dev, start_dev, stop_dev
from tests.integration.events.conftest import Received, Sink, cloudevent, encode

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
OPERATOR = "accounts:read accounts:write transfers:read transfers:write operator"


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    running = Sink().start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def dev_with_sink(sink: Sink) -> Iterator[Dev]:
    # Not under pytest's tmp root: another pytest session starting resets it to 0700 and
    # the embedded server (its own system user) would lose its data directory.
    home = state_dir("home-")
    running = start_dev(home, {"K_SINK": sink.url})
    try:
        yield running
    finally:
        stop_dev(running)
        shutil.rmtree(home, ignore_errors=True)


def wait_for(what: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def about(sink: Sink, subject: str) -> list[Received]:
    return [r for r in sink.accepted() if r.subject == subject]


def check_event(received: Received) -> None:
    """Binary mode, every attribute the contract names, data valid against its schema."""
    headers = received.headers
    assert headers["ce-specversion"] == "1.0"
    assert headers["content-type"] == "application/json"
    uuid.UUID(headers["ce-id"])
    assert headers["ce-partitionkey"] == headers["ce-subject"]
    assert TRACEPARENT.match(headers["ce-traceparent"])
    assert headers["ce-dataschema"] == dataschema(headers["ce-type"])
    assert headers["ce-time"].endswith("Z")
    schema_file = ROOT / "schemas" / "events" / f"{headers['ce-type']}.json"
    jsonschema.validate(received.data(), json.loads(schema_file.read_text()))


def test_a_reserve_and_confirm_over_http_reach_the_sink_in_order(
    dev_with_sink: Dev, sink: Sink
) -> None:
    ops = dev_with_sink.client("ops", OPERATOR)
    funding, alice, bob = (str(uuid.uuid4()) for _ in range(3))
    for account_id, owner, limit in ((funding, "bank", None), (alice, "alice", 0), (bob, "bob", 0)):
        body = {"id": account_id, "currency": "EUR", "owner": owner, "overdraft_limit": limit}
        assert ops.post("/v1/accounts", json=body).status_code == 201
    pay_in = {
        "id": str(uuid.uuid4()),
        "debit_account_id": funding,
        "credit_account_id": alice,
        "amount": 5_000,
        "currency": "EUR",
        "immediate": True,
    }
    assert ops.post("/v1/transfers", json=pay_in).status_code == 201
    transfer_id = str(uuid.uuid4())
    reserve = {
        "id": transfer_id,
        "debit_account_id": alice,
        "credit_account_id": bob,
        "amount": 1_200,
        "currency": "EUR",
    }
    assert ops.post("/v1/transfers", json=reserve).status_code == 201
    assert ops.post(f"/v1/transfers/{transfer_id}/confirm").status_code == 200

    events = wait_for(lambda: (found := about(sink, transfer_id)) and len(found) >= 2 and found)
    assert [e.headers["ce-type"] for e in events] == [
        "dev.holdfast.transfer.reserved.v1",
        "dev.holdfast.transfer.confirmed.v1",
    ]
    assert events[1].data()["state"] == "confirmed" and events[1].data()["amount"] == 1_200
    for account_id in (funding, alice, bob):
        (opened,) = wait_for(lambda a=account_id: about(sink, a))
        assert opened.headers["ce-type"] == "dev.holdfast.account.opened.v1"
        check_event(opened)
    for event in events:
        check_event(event)
        assert event.headers["ce-source"] == "/holdfast/transfers"


def test_a_payment_across_currencies_by_event_then_http_reaches_the_sink_with_each_leg(
    dev_with_sink: Dev, sink: Sink
) -> None:
    """100.00 EUR in, 108.00 USD out, through the bank's positions: reserved by a CloudEvent
    at the ingress, confirmed over HTTP, announced with every leg's currency."""
    ops = dev_with_sink.client("ops", OPERATOR)
    funding, customer, position_eur = (str(uuid.uuid4()) for _ in range(3))
    position_usd, merchant = (str(uuid.uuid4()) for _ in range(2))
    for account_id, currency, limit in (
        (funding, "EUR", None),
        (customer, "EUR", 0),
        (position_eur, "EUR", None),
        (position_usd, "USD", None),
        (merchant, "USD", 0),
    ):
        body = {"id": account_id, "currency": currency, "owner": "bank", "overdraft_limit": limit}
        assert ops.post("/v1/accounts", json=body).status_code == 201
    pay_in = {
        "id": str(uuid.uuid4()),
        "debit_account_id": funding,
        "credit_account_id": customer,
        "amount": 25_000,
        "currency": "EUR",
        "immediate": True,
    }
    assert ops.post("/v1/transfers", json=pay_in).status_code == 201
    transfer_id = str(uuid.uuid4())
    legs = [
        {
            "debit_account_id": customer,
            "credit_account_id": position_eur,
            "amount": 10_000,
            "currency": "EUR",
        },
        {
            "debit_account_id": position_usd,
            "credit_account_id": merchant,
            "amount": 10_800,
            "currency": "USD",
        },
    ]
    event = cloudevent("dev.holdfast.transfer.reserve.v1", {"id": transfer_id, "legs": legs})
    headers, body = encode(event, "binary")
    assert ops.post("/events", headers=headers, content=body).status_code == 202
    wait_for(lambda: ops.get(f"/v1/transfers/{transfer_id}").status_code == 200)
    confirmed = ops.post(f"/v1/transfers/{transfer_id}/confirm")
    assert confirmed.status_code == 200 and confirmed.json()["currency"] is None

    events = wait_for(lambda: (found := about(sink, transfer_id)) and len(found) >= 2 and found)
    assert [e.headers["ce-type"] for e in events] == [
        "dev.holdfast.transfer.reserved.v1",
        "dev.holdfast.transfer.confirmed.v1",
    ]
    for announced in events:
        check_event(announced)
        assert announced.data()["currency"] is None
        assert announced.data()["legs"] == legs
    balances = {
        a: ops.get(f"/v1/accounts/{a}").json()["balance"]["posted"]
        for a in (customer, position_eur, position_usd, merchant)
    }
    assert balances == {
        customer: 15_000,
        position_eur: 10_000,
        position_usd: -10_800,
        merchant: 10_800,
    }


def test_a_cloudevent_sent_to_the_ingress_takes_effect(dev_with_sink: Dev, sink: Sink) -> None:
    ops = dev_with_sink.client("ops", OPERATOR)
    account_id = str(uuid.uuid4())
    event = cloudevent(
        "dev.holdfast.account.open.v1", {"id": account_id, "currency": "EUR", "owner": "carol"}
    )
    headers, body = encode(event, "structured")
    assert ops.post("/events", headers=headers, content=body).status_code == 202
    got = wait_for(lambda: (r := ops.get(f"/v1/accounts/{account_id}")).status_code == 200 and r)
    assert got.json()["owner"] == "carol"
    (opened,) = wait_for(lambda: about(sink, account_id))
    check_event(opened)

    # A business refusal comes back through the outbox as a rejection event.
    transfer_id = str(uuid.uuid4())
    refused = cloudevent(
        "dev.holdfast.transfer.reserve.v1",
        {
            "id": transfer_id,
            "debit_account_id": account_id,  # holds nothing: insufficient funds
            "credit_account_id": str(uuid.uuid4()),
            "amount": 10,
            "currency": "EUR",
        },
    )
    headers, body = encode(refused, "binary")
    assert ops.post("/events", headers=headers, content=body).status_code == 202
    (rejection,) = wait_for(lambda: about(sink, transfer_id))
    assert rejection.headers["ce-type"] == "dev.holdfast.transfer.rejected.v1"
    assert rejection.data()["event"]["id"] == refused["id"]
    check_event(rejection)
    # Redelivering the same event has no second effect and no second rejection.
    assert ops.post("/events", headers=headers, content=body).status_code == 202
    time.sleep(0.5)
    assert len(about(sink, transfer_id)) == 1


def test_a_malformed_event_is_refused_by_the_ingress(dev_with_sink: Dev) -> None:
    ops = dev_with_sink.client("ops", OPERATOR)
    response = ops.post(
        "/events",
        headers={"ce-specversion": "1.0", "ce-type": "dev.holdfast.account.open.v1"},
        content=b"{}",
    )
    assert response.status_code == 400
