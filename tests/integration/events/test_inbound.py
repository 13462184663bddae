"""Inbound CloudEvents at `POST /` of the functions: exactly one effect per event in any order
and any number of deliveries, 400 for malformed events (nothing changes), 200 with a
rejection reply for business refusals, 503 for transient failures."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from cloudevents.http import from_http

from holdfast.adapters.database import Database, FaultInjector
from holdfast.event_models import dataschema
from holdfast.services import events as event_service
from tests.conftest import Api, function_client, snapshot
from tests.integration.events.conftest import cloudevent, encode, post_event
from tests.integration.helpers import OPS, funded, open_account

MODES = ["binary", "structured"]
RESERVE = "dev.holdfast.transfer.reserve.v1"
CONFIRM = "dev.holdfast.transfer.confirm.v1"
CANCEL = "dev.holdfast.transfer.cancel.v1"
OPEN = "dev.holdfast.account.open.v1"


def counts(db: Database) -> dict[str, Any]:
    """What an effect changes: rows per table, and every account's counters."""
    with db.engine.connect() as c:
        tables = ["accounts", "transfers", "holds", "ledger_entries", "outbox", "inbox"]
        result: dict[str, Any] = {
            t: c.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in tables
        }
        result["balances"] = sorted(
            tuple(str(v) for v in row)
            for row in c.execute(
                sa.text(
                    "SELECT id, debits_posted, credits_posted, debits_reserved, credits_reserved "
                    "FROM accounts"
                )
            )
        )
        return result


def transfer_state(db: Database, transfer_id: str) -> str | None:
    with db.engine.connect() as c:
        value = c.execute(
            sa.text("SELECT state FROM transfers WHERE id = :id"), {"id": transfer_id}
        ).scalar()
        return None if value is None else str(value)


def holds(db: Database, transfer_id: str) -> int:
    with db.engine.connect() as c:
        return int(
            c.execute(
                sa.text("SELECT count(*) FROM holds WHERE transfer_id = :id"), {"id": transfer_id}
            ).scalar_one()
        )


@pytest.fixture
def parties(accounts_api: Api, transfers_api: Api) -> tuple[str, str]:
    return funded(accounts_api, transfers_api, 10_000), open_account(accounts_api, owner="bob")


def reserve_data(parties: tuple[str, str], transfer_id: str, amount: int = 1_000) -> dict[str, Any]:
    debit, credit = parties
    return {
        "id": transfer_id,
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": amount,
        "currency": "EUR",
    }


def ok(response: Any) -> Any:
    assert response.status_code == 200, response.data
    return response


# -- duplicates -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_redelivered_account_open_has_one_effect(
    accounts_api: Api, db: Database, mode: str
) -> None:
    account_id = str(uuid.uuid4())
    event = cloudevent(OPEN, {"id": account_id, "currency": "EUR", "owner": "carol"})
    ok(post_event(accounts_api, event, mode))
    after_first = counts(db)
    for again in MODES:
        ok(post_event(accounts_api, event, again))
    assert counts(db) == after_first
    assert after_first["accounts"] == 1 and after_first["inbox"] == 1
    got = accounts_api.call("GET", f"/v1/accounts/{account_id}", **OPS)
    assert got.status_code == 200 and got.json["owner"] == "carol"


@pytest.mark.parametrize("mode", MODES)
def test_redelivered_reserve_confirm_and_cancel_each_have_one_effect(
    transfers_api: Api, db: Database, parties: tuple[str, str], mode: str
) -> None:
    confirmed, cancelled = str(uuid.uuid4()), str(uuid.uuid4())
    sequence = [
        cloudevent(RESERVE, reserve_data(parties, confirmed, 1_000)),
        cloudevent(CONFIRM, {"id": confirmed, "amount": 600}),
        cloudevent(RESERVE, reserve_data(parties, cancelled, 2_000)),
        cloudevent(CANCEL, {"id": cancelled}),
    ]
    for event in sequence:
        ok(post_event(transfers_api, event, mode))
        once = counts(db)
        for again in MODES:
            ok(post_event(transfers_api, event, again))
        assert counts(db) == once, f"a redelivered {event['type']} changed something"
    assert transfer_state(db, confirmed) == "confirmed"
    assert transfer_state(db, cancelled) == "cancelled"
    debit_posted = next(b for b in counts(db)["balances"] if b[0] == parties[0])
    assert debit_posted[1:] == ("600", "10000", "0", "0")


def test_concurrent_duplicates_race_to_one_effect(
    runtime: Any, db: Database, parties: tuple[str, str]
) -> None:
    event = cloudevent(RESERVE, reserve_data(parties, str(uuid.uuid4())))
    headers, body = encode(event, "binary")
    clients = [function_client("transfers") for _ in range(6)]
    statuses: list[int] = []
    barrier = threading.Barrier(len(clients))

    def deliver(client: Any) -> None:
        barrier.wait()
        statuses.append(client.post("/", headers=headers, data=body).status_code)

    threads = [threading.Thread(target=deliver, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 6
    assert counts(db)["inbox"] == 1
    assert holds(db, event.data["id"]) == 2


# -- any order ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_cancel_delivered_before_its_reserve_leaves_no_hold(
    transfers_api: Api, db: Database, parties: tuple[str, str], mode: str
) -> None:
    transfer_id = str(uuid.uuid4())
    before = counts(db)["balances"]
    cancel = cloudevent(CANCEL, {"id": transfer_id})
    reserve = cloudevent(RESERVE, reserve_data(parties, transfer_id))
    ok(post_event(transfers_api, cancel, mode))
    answer = ok(post_event(transfers_api, reserve, mode))
    reply = from_http(dict(answer.headers), answer.data)
    assert reply["type"] == "dev.holdfast.transfer.rejected.v1"
    assert reply.data["code"] == "transfer_cancelled"
    for event in (reserve, cancel, reserve):
        ok(post_event(transfers_api, event, mode))
    assert transfer_state(db, transfer_id) == "cancelled"
    assert holds(db, transfer_id) == 0
    assert counts(db)["balances"] == before, "no money was held"


def test_a_confirm_delivered_before_its_reserve_is_refused_once_and_never_replayed(
    transfers_api: Api, db: Database, parties: tuple[str, str]
) -> None:
    transfer_id = str(uuid.uuid4())
    confirm = cloudevent(CONFIRM, {"id": transfer_id})
    reserve = cloudevent(RESERVE, reserve_data(parties, transfer_id))
    first = ok(post_event(transfers_api, confirm))
    assert from_http(dict(first.headers), first.data).data["code"] == "transfer_not_found"
    ok(post_event(transfers_api, reserve))
    again = ok(post_event(transfers_api, confirm))  # the same event: the same answer
    assert from_http(dict(again.headers), again.data).data["code"] == "transfer_not_found"
    assert transfer_state(db, transfer_id) == "reserved"
    ok(post_event(transfers_api, cloudevent(CONFIRM, {"id": transfer_id})))  # a new event
    assert transfer_state(db, transfer_id) == "confirmed"


@pytest.mark.parametrize("seed", range(6))
def test_every_delivery_order_with_duplicates_reaches_the_same_state(
    transfers_api: Api, db: Database, parties: tuple[str, str], seed: int
) -> None:
    import random

    transfer_id = str(uuid.uuid4())
    reserve = cloudevent(RESERVE, reserve_data(parties, transfer_id, 1_500))
    cancel = cloudevent(CANCEL, {"id": transfer_id})
    deliveries = [reserve, reserve, cancel, cancel, reserve]
    rng = random.Random(seed)
    rng.shuffle(deliveries)
    for event in deliveries:
        ok(post_event(transfers_api, event, rng.choice(MODES)))
    # Whatever came first, the transfer ends cancelled and holds nothing.
    assert transfer_state(db, transfer_id) == "cancelled"
    assert holds(db, transfer_id) == 0
    assert counts(db)["inbox"] == 2


# -- rejections -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_business_rejection_is_200_with_a_rejection_reply_and_an_outbox_row(
    transfers_api: Api, db: Database, parties: tuple[str, str], mode: str
) -> None:
    transfer_id = str(uuid.uuid4())
    event = cloudevent(RESERVE, reserve_data(parties, transfer_id, 999_999))
    answer = ok(post_event(transfers_api, event, mode))
    reply = from_http(dict(answer.headers), answer.data)
    assert reply["type"] == "dev.holdfast.transfer.rejected.v1"
    assert reply["subject"] == reply["partitionkey"] == transfer_id
    assert reply["dataschema"] == dataschema("dev.holdfast.transfer.rejected.v1")
    assert reply.data["code"] == "insufficient_funds"
    assert reply.data["event"] == {"source": event["source"], "id": event["id"], "type": RESERVE}
    with db.engine.connect() as c:
        row = c.execute(
            sa.text("SELECT id, data FROM outbox WHERE type = 'dev.holdfast.transfer.rejected.v1'")
        ).one()
    assert str(row.id) == reply["id"] and row.data == reply.data
    assert transfer_state(db, transfer_id) is None
    again = ok(post_event(transfers_api, event, mode))
    assert from_http(dict(again.headers), again.data)["id"] == reply["id"]


def test_an_account_open_with_different_fields_is_rejected_with_an_account_reply(
    accounts_api: Api,
) -> None:
    account_id = str(uuid.uuid4())
    ok(
        post_event(
            accounts_api, cloudevent(OPEN, {"id": account_id, "currency": "EUR", "owner": "a"})
        )
    )
    answer = ok(
        post_event(
            accounts_api, cloudevent(OPEN, {"id": account_id, "currency": "USD", "owner": "a"})
        )
    )
    reply = from_http(dict(answer.headers), answer.data)
    assert reply["type"] == "dev.holdfast.account.rejected.v1"
    assert reply.data["code"] == "exists_with_different_fields"


def test_a_transient_failure_is_503_so_knative_retries(
    transfers_api: Api, db: Database, parties: tuple[str, str]
) -> None:
    event = cloudevent(RESERVE, reserve_data(parties, str(uuid.uuid4())))
    before = snapshot(db)
    db.faults, db.attempts_max = FaultInjector(1.0), 2
    try:
        answer = post_event(transfers_api, event)
    finally:
        db.faults, db.attempts_max = None, 12
    assert answer.status_code == 503
    assert snapshot(db) == before
    ok(post_event(transfers_api, event))  # Knative's retry goes through
    assert transfer_state(db, event.data["id"]) == "reserved"


# -- malformed ------------------------------------------------------------------------------


def binary(event_type: str, data: bytes, **overrides: str | None) -> tuple[dict[str, str], bytes]:
    headers = {
        "ce-specversion": "1.0",
        "ce-type": event_type,
        "ce-source": "/tests/events",
        "ce-id": str(uuid.uuid4()),
        "content-type": "application/json",
    }
    for name, value in overrides.items():
        key = f"ce-{name}" if name != "content_type" else "content-type"
        if value is None:
            headers.pop(key, None)
        else:
            headers[key] = value
    return headers, data


def structured(document: Any) -> tuple[dict[str, str], bytes]:
    return {"content-type": "application/cloudevents+json"}, json.dumps(document).encode()


def good_cancel() -> bytes:
    return json.dumps({"id": str(uuid.uuid4())}).encode()


MALFORMED = {
    "no id": binary(CANCEL, good_cancel(), id=None),
    "no source": binary(CANCEL, good_cancel(), source=None),
    "no type": binary(CANCEL, good_cancel(), type=None),
    "no specversion": binary(CANCEL, good_cancel(), specversion=None),
    "unknown specversion": binary(CANCEL, good_cancel(), specversion="0.1"),
    "unknown type": binary("dev.holdfast.transfer.explode.v1", good_cancel()),
    "bad JSON data": binary(CANCEL, b'{"id": '),
    "data not an object": binary(CANCEL, b"[1, 2]"),
    "no data": binary(CANCEL, b""),
    "wrong data fields": binary(CANCEL, json.dumps({"transfer": str(uuid.uuid4())}).encode()),
    "extra data field": binary(
        CANCEL, json.dumps({"id": str(uuid.uuid4()), "why": "because"}).encode()
    ),
    "wrong type of id": binary(CANCEL, json.dumps({"id": 42}).encode()),
    "amount as a string": binary(
        CONFIRM, json.dumps({"id": str(uuid.uuid4()), "amount": "10"}).encode()
    ),
    "amount as a float": binary(
        CONFIRM, json.dumps({"id": str(uuid.uuid4()), "amount": 10.5}).encode()
    ),
    "negative amount": binary(
        CONFIRM, json.dumps({"id": str(uuid.uuid4()), "amount": -1}).encode()
    ),
    "reserve without accounts": binary(
        RESERVE, json.dumps({"id": str(uuid.uuid4()), "currency": "EUR"}).encode()
    ),
    "oversized (> 64 KiB)": binary(
        CANCEL, json.dumps({"id": str(uuid.uuid4()), "pad": "x" * 70_000}).encode()
    ),
    "structured: not JSON": ({"content-type": "application/cloudevents+json"}, b"{not json"),
    "structured: missing id": structured(
        {"specversion": "1.0", "type": CANCEL, "source": "/t", "data": {"id": str(uuid.uuid4())}}
    ),
    "structured: bad data": structured(
        {"specversion": "1.0", "type": CANCEL, "source": "/t", "id": "1", "data": {"id": "x"}}
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_event_is_400_and_changes_nothing(
    transfers_api: Api, db: Database, parties: tuple[str, str], case: str
) -> None:
    before = snapshot(db)
    headers, body = MALFORMED[case]
    answer = transfers_api.client.post("/", headers=headers, data=body)
    assert answer.status_code == 400, (answer.status_code, answer.data)
    assert answer.headers["content-type"] == "application/problem+json"
    assert snapshot(db) == before


def test_every_handled_type_is_a_contract_type(runtime: Any) -> None:
    from holdfast.entrypoints import accounts, events, transfers

    handled = set(accounts.api.events) | set(transfers.api.events)
    assert handled - {"dev.knative.sources.ping"} == set(events.INBOUND)


def test_the_rejection_reply_id_is_the_outbox_id() -> None:
    message = event_service.Inbound("/s", "e-1", RESERVE, str(uuid.uuid4()))
    assert event_service.rejection_event_id(message) == event_service.rejection_event_id(message)
