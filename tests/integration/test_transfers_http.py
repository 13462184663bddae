"""The transfers function over HTTP: every rule and error code of the contract's Transfers."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from holdfast.services import transfers as transfer_service
from tests.conftest import Api, snapshot
from tests.integration.helpers import OPS, check_invariants, funded, lapse, open_account


@pytest.fixture
def alice(accounts_api: Api, transfers_api: Api) -> str:
    return funded(accounts_api, transfers_api, 10_000)


@pytest.fixture
def bob(accounts_api: Api) -> str:
    return open_account(accounts_api, owner="bob")


def reserve_body(debit: str, credit: str, amount: int = 1000, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": amount,
        "currency": "EUR",
        **extra,
    }


def balance(api: Api, account_id: str) -> dict[str, int]:
    body = api.call("GET", f"/v1/accounts/{account_id}", **OPS).json
    return {
        "posted": body["balance"]["posted"],
        "available": body["balance"]["available"],
        "debits_reserved": body["debits_reserved"],
        "credits_reserved": body["credits_reserved"],
    }


def entries(db, transfer_id: str) -> list[tuple[str, str, int]]:
    with db.engine.connect() as c:
        rows = c.execute(
            sa.text(
                "SELECT account_id, direction, amount FROM ledger_entries WHERE transfer_id = :t "
                "ORDER BY leg, direction"
            ),
            {"t": transfer_id},
        )
        return [(str(a), d, n) for a, d, n in rows]


def test_reserve_holds_funds_without_touching_the_ledger(
    accounts_api: Api, transfers_api: Api, alice: str, bob: str, db
) -> None:
    body = reserve_body(alice, bob, 1500, metadata={"ref": "inv-7"})
    response = transfers_api.call("POST", "/v1/transfers", body)
    assert response.status_code == 201
    reserved = response.json
    assert reserved["state"] == "reserved" and reserved["amount"] == 1500
    assert reserved["expires_at"] > reserved["created_at"]
    assert reserved["metadata"] == {"ref": "inv-7"}
    assert balance(accounts_api, alice) == {
        "posted": 10_000,
        "available": 8_500,
        "debits_reserved": 1_500,
        "credits_reserved": 0,
    }
    assert balance(accounts_api, bob)["credits_reserved"] == 1_500
    assert entries(db, body["id"]) == []
    assert transfers_api.call("GET", f"/v1/transfers/{body['id']}").json == reserved


def test_confirm_posts_balanced_entries_in_the_same_transaction(
    accounts_api: Api, transfers_api: Api, alice: str, bob: str, db
) -> None:
    body = reserve_body(alice, bob, 1500)
    transfers_api.call("POST", "/v1/transfers", body)
    confirmed = transfers_api.call("POST", f"/v1/transfers/{body['id']}/confirm")
    assert confirmed.status_code == 200
    assert confirmed.json["state"] == "confirmed" and confirmed.json["confirmed_amount"] == 1500
    assert sorted(entries(db, body["id"])) == sorted(
        [(alice, "debit", 1500), (bob, "credit", 1500)]
    )
    assert balance(accounts_api, alice)["posted"] == 8_500
    assert balance(accounts_api, bob) == {
        "posted": 1500,
        "available": 1500,
        "debits_reserved": 0,
        "credits_reserved": 0,
    }
    again = transfers_api.call("POST", f"/v1/transfers/{body['id']}/confirm")
    assert (again.status_code, again.json) == (200, confirmed.json)
    replay = transfers_api.call("POST", "/v1/transfers", body)
    assert replay.status_code == 201 and replay.json["state"] == "reserved"
    check_invariants(db)


def test_partial_confirm_releases_the_rest(
    accounts_api: Api, transfers_api: Api, alice: str, bob: str
) -> None:
    body = reserve_body(alice, bob, 1500)
    transfers_api.call("POST", "/v1/transfers", body)
    too_much = transfers_api.call("POST", f"/v1/transfers/{body['id']}/confirm", {"amount": 1501})
    assert (too_much.status_code, too_much.json["code"]) == (422, "amount_exceeds_reserved")
    response = transfers_api.call("POST", f"/v1/transfers/{body['id']}/confirm", {"amount": 400})
    assert response.json["confirmed_amount"] == 400
    assert balance(accounts_api, alice) == {
        "posted": 9_600,
        "available": 9_600,
        "debits_reserved": 0,
        "credits_reserved": 0,
    }
    other = transfers_api.call("POST", f"/v1/transfers/{body['id']}/confirm", {"amount": 500})
    assert (other.status_code, other.json["code"]) == (409, "exists_with_different_fields")


def test_cancel_releases_and_is_idempotent(
    accounts_api: Api, transfers_api: Api, alice: str, bob: str, db
) -> None:
    body = reserve_body(alice, bob)
    transfers_api.call("POST", "/v1/transfers", body)
    first = transfers_api.call("POST", f"/v1/transfers/{body['id']}/cancel")
    again = transfers_api.call("POST", f"/v1/transfers/{body['id']}/cancel")
    assert first.status_code == again.status_code == 200
    assert first.json == again.json and first.json["state"] == "cancelled"
    assert balance(accounts_api, alice)["available"] == 10_000
    refused = transfers_api.call("POST", f"/v1/transfers/{body['id']}/confirm")
    assert (refused.status_code, refused.json["code"]) == (409, "transfer_cancelled")
    check_invariants(db)


def test_cancel_after_confirm_is_409(transfers_api: Api, alice: str, bob: str) -> None:
    body = reserve_body(alice, bob)
    transfers_api.call("POST", "/v1/transfers", body)
    transfers_api.call("POST", f"/v1/transfers/{body['id']}/confirm")
    refused = transfers_api.call("POST", f"/v1/transfers/{body['id']}/cancel")
    assert (refused.status_code, refused.json["code"]) == (409, "transfer_confirmed")


def test_empty_cancel_fences_the_id(
    accounts_api: Api, transfers_api: Api, alice: str, bob: str, db
) -> None:
    body = reserve_body(alice, bob)
    cancelled = transfers_api.call("POST", f"/v1/transfers/{body['id']}/cancel")
    assert (cancelled.status_code, cancelled.json["state"]) == (200, "cancelled")
    suspended = transfers_api.call("POST", "/v1/transfers", body)
    assert (suspended.status_code, suspended.json["code"]) == (409, "transfer_cancelled")
    assert balance(accounts_api, alice)["available"] == 10_000
    assert snapshot(db)["holds"] == []
    assert transfers_api.call("GET", f"/v1/transfers/{body['id']}").json["state"] == "cancelled"


def test_unknown_transfer_is_404(transfers_api: Api) -> None:
    for path in (f"/v1/transfers/{uuid.uuid4()}", f"/v1/transfers/{uuid.uuid4()}/confirm"):
        method = "GET" if path.count("/") == 3 else "POST"
        response = transfers_api.call(method, path)
        assert (response.status_code, response.json["code"]) == (404, "transfer_not_found")


def test_same_id_with_different_fields_names_them(
    transfers_api: Api, alice: str, bob: str, db
) -> None:
    body = reserve_body(alice, bob)
    transfers_api.call("POST", "/v1/transfers", body)
    before = snapshot(db)
    response = transfers_api.call("POST", "/v1/transfers", {**body, "amount": 999, "timeout_s": 60})
    assert (response.status_code, response.json["code"]) == (409, "exists_with_different_fields")
    assert "amount" in response.json["detail"] and "timeout_s" in response.json["detail"]
    assert snapshot(db) == before


def test_business_rejections(
    accounts_api: Api, transfers_api: Api, alice: str, bob: str, db
) -> None:
    usd = open_account(accounts_api, owner="bob", currency="USD")
    frozen = open_account(accounts_api, owner="alice")
    accounts_api.call("POST", f"/v1/accounts/{frozen}/freeze", **OPS)
    before = snapshot(db)
    cases = [
        (reserve_body(alice, bob, 10_001), 422, "insufficient_funds"),
        (reserve_body(alice, usd, 10), 422, "currency_mismatch"),
        (reserve_body(alice, frozen, 10), 409, "account_not_open"),
        (reserve_body(frozen, alice, 10), 409, "account_not_open"),
        (reserve_body(alice, str(uuid.uuid4()), 10), 404, "account_not_found"),
        (reserve_body(bob, alice, 10), 404, "account_not_found"),  # alice debiting bob
    ]
    for body, status, code in cases:
        response = transfers_api.call("POST", "/v1/transfers", body)
        assert (response.status_code, response.json["code"]) == (status, code), body
        assert response.mimetype == "application/problem+json"
    assert snapshot(db) == before


def test_overdraft_limit_is_honoured(accounts_api: Api, transfers_api: Api, bob: str) -> None:
    account = funded(accounts_api, transfers_api, 100, overdraft_limit=50)
    ok = transfers_api.call("POST", "/v1/transfers", reserve_body(account, bob, 150))
    assert ok.status_code == 201
    assert balance(accounts_api, account)["available"] == -50
    refused = transfers_api.call("POST", "/v1/transfers", reserve_body(account, bob, 1))
    assert refused.json["code"] == "insufficient_funds"


def test_debit_normal_accounts_are_limited_on_credits(
    accounts_api: Api, transfers_api: Api, alice: str
) -> None:
    cash = open_account(accounts_api, owner="alice", normal_balance="debit", overdraft_limit=0)
    # A credit lowers a debit-normal account: with nothing in it, it is refused...
    refused = transfers_api.call("POST", "/v1/transfers", reserve_body(alice, cash, 10))
    assert (refused.status_code, refused.json["code"]) == (422, "insufficient_funds")
    # ...while a debit raises it and is never limited.
    raise_it = reserve_body(cash, alice, 10)
    assert transfers_api.call("POST", "/v1/transfers", raise_it).status_code == 201
    transfers_api.call("POST", f"/v1/transfers/{raise_it['id']}/confirm")
    assert balance(accounts_api, cash)["posted"] == 10
    assert (
        transfers_api.call("POST", "/v1/transfers", reserve_body(alice, cash, 10)).status_code
        == 201
    )
    assert balance(accounts_api, cash)["available"] == 0


BAD_RESERVES: list[tuple[str, dict[str, Any]]] = [
    ("float amount", {"amount": 10.0}),
    ("string amount", {"amount": "10"}),
    ("zero amount", {"amount": 0}),
    ("negative amount", {"amount": -5}),
    ("boolean amount", {"amount": True}),
    ("amount too large", {"amount": 2**53}),
    ("missing amount", {"amount": None}),
    ("bad currency", {"currency": "eur"}),
    ("unknown currency", {"currency": "ZZZ"}),
    ("bad id", {"id": "t-1"}),
    ("timeout zero", {"timeout_s": 0}),
    ("timeout too long", {"timeout_s": 86_401}),
    ("timeout float", {"timeout_s": 1.5}),
    ("immediate not boolean", {"immediate": "yes"}),
    ("unknown field", {"memo": "hi"}),
    (
        "legs and single fields",
        {
            "legs": [
                {
                    "debit_account_id": str(uuid.uuid4()),
                    "credit_account_id": str(uuid.uuid4()),
                    "amount": 1,
                }
            ]
        },
    ),
    (
        "too many legs",
        {
            "amount": None,
            "debit_account_id": None,
            "credit_account_id": None,
            "legs": [
                {
                    "debit_account_id": str(uuid.uuid4()),
                    "credit_account_id": str(uuid.uuid4()),
                    "amount": 1,
                }
            ]
            * 17,
        },
    ),
    (
        "empty legs",
        {"amount": None, "debit_account_id": None, "credit_account_id": None, "legs": []},
    ),
]


@pytest.mark.parametrize(("name", "change"), BAD_RESERVES, ids=[n for n, _ in BAD_RESERVES])
def test_bad_reserve_input_is_422_and_changes_nothing(
    transfers_api: Api, alice: str, bob: str, db, name: str, change: dict[str, Any]
) -> None:
    body = {k: v for k, v in (reserve_body(alice, bob) | change).items() if v is not None}
    before = snapshot(db)
    response = transfers_api.call("POST", "/v1/transfers", body)
    assert (response.status_code, response.json["code"]) == (422, "validation_error"), response.json
    assert snapshot(db) == before


def test_same_account_on_both_sides_is_422(transfers_api: Api, alice: str, db) -> None:
    before = snapshot(db)
    response = transfers_api.call("POST", "/v1/transfers", reserve_body(alice, alice))
    assert (response.status_code, response.json["code"]) == (422, "validation_error")
    assert snapshot(db) == before


@pytest.mark.parametrize(
    "body", [{"amount": 1.5}, {"amount": 0}, {"amount": "1"}, {"extra": 1}, [1]]
)
def test_bad_confirm_input_is_422(transfers_api: Api, alice: str, bob: str, db, body: Any) -> None:
    reserve = reserve_body(alice, bob)
    transfers_api.call("POST", "/v1/transfers", reserve)
    before = snapshot(db)
    response = transfers_api.call("POST", f"/v1/transfers/{reserve['id']}/confirm", body)
    assert (response.status_code, response.json["code"]) == (422, "validation_error")
    assert snapshot(db) == before


def test_multi_leg_transfers(
    accounts_api: Api, transfers_api: Api, alice: str, bob: str, db
) -> None:
    carol = open_account(accounts_api, owner="carol")
    body = {
        "id": str(uuid.uuid4()),
        "currency": "EUR",
        "legs": [
            {"debit_account_id": alice, "credit_account_id": bob, "amount": 700},
            {"debit_account_id": alice, "credit_account_id": carol, "amount": 300},
        ],
    }
    reserved = transfers_api.call("POST", "/v1/transfers", body)
    assert reserved.status_code == 201 and reserved.json["amount"] == 1000
    assert reserved.json["debit_account_id"] is None and len(reserved.json["legs"]) == 2
    assert balance(accounts_api, alice)["available"] == 9_000
    partial = transfers_api.call("POST", f"/v1/transfers/{body['id']}/confirm", {"amount": 10})
    assert (partial.status_code, partial.json["code"]) == (422, "validation_error")
    assert transfers_api.call("POST", f"/v1/transfers/{body['id']}/confirm").status_code == 200
    assert len(entries(db, body["id"])) == 4
    assert balance(accounts_api, carol)["posted"] == 300
    check_invariants(db)


def test_multi_leg_is_atomic(
    accounts_api: Api, transfers_api: Api, alice: str, bob: str, db
) -> None:
    closed = open_account(accounts_api, owner="carol")
    accounts_api.call("POST", f"/v1/accounts/{closed}/close", **OPS)
    before = snapshot(db)
    body = {
        "id": str(uuid.uuid4()),
        "currency": "EUR",
        "legs": [
            {"debit_account_id": alice, "credit_account_id": bob, "amount": 700},
            {"debit_account_id": alice, "credit_account_id": closed, "amount": 300},
        ],
    }
    response = transfers_api.call("POST", "/v1/transfers", body)
    assert (response.status_code, response.json["code"]) == (409, "account_not_open")
    assert snapshot(db) == before


def test_immediate_transfer_confirms_in_one_step(
    accounts_api: Api, transfers_api: Api, alice: str, bob: str, db
) -> None:
    body = reserve_body(alice, bob, 250, immediate=True)
    response = transfers_api.call("POST", "/v1/transfers", body)
    assert response.status_code == 201 and response.json["state"] == "confirmed"
    assert response.json["expires_at"] is None
    assert balance(accounts_api, bob)["posted"] == 250
    assert transfers_api.call("POST", f"/v1/transfers/{body['id']}/confirm").status_code == 200
    again = transfers_api.call("POST", "/v1/transfers", body)
    assert (again.status_code, again.json) == (201, response.json)
    check_invariants(db)


def test_expired_funds_are_available_at_expires_at_without_a_sweep(
    accounts_api: Api, transfers_api: Api, alice: str, bob: str, db
) -> None:
    body = reserve_body(alice, bob, 10_000)
    reserved = transfers_api.call("POST", "/v1/transfers", body).json
    refused = transfers_api.call("POST", "/v1/transfers", reserve_body(alice, bob, 1))
    assert refused.json["code"] == "insufficient_funds"
    lapse(db, body["id"])
    # No sweep ran: the hold row is still there, yet every read and reserve sees it gone.
    assert len(snapshot(db)["holds"]) == 2
    assert transfers_api.call("GET", f"/v1/transfers/{body['id']}").json["state"] == "expired"
    assert balance(accounts_api, alice)["available"] == 10_000
    assert balance(accounts_api, alice)["debits_reserved"] == 0
    again = transfers_api.call("POST", "/v1/transfers", reserve_body(alice, bob, 10_000))
    assert again.status_code == 201
    late = transfers_api.call("POST", f"/v1/transfers/{body['id']}/confirm")
    assert (late.status_code, late.json["code"]) == (409, "transfer_expired")
    replay = transfers_api.call("POST", "/v1/transfers", body)
    assert (replay.status_code, replay.json) == (201, reserved)
    check_invariants(db)


def test_a_one_second_reservation_reads_as_expired_once_its_second_has_passed(
    accounts_api: Api, transfers_api: Api, alice: str, bob: str, db
) -> None:
    """The real clock, no sweep: polled until the database's clock passes expires_at (a
    busy machine only makes that later, never wrong)."""
    body = reserve_body(alice, bob, 10_000, timeout_s=1)
    reserved = transfers_api.call("POST", "/v1/transfers", body).json
    expires_at = datetime.fromisoformat(reserved["expires_at"])
    deadline = time.monotonic() + 60
    while transfers_api.call("GET", f"/v1/transfers/{body['id']}").json["state"] == "reserved":
        assert time.monotonic() < deadline, "still reserved a minute after expires_at"
        time.sleep(0.05)
    with db.engine.connect() as c:
        now = c.execute(sa.text("SELECT now()")).scalar_one()
    assert now >= expires_at
    assert len(snapshot(db)["holds"]) == 2  # expired at read time, before any sweep
    assert balance(accounts_api, alice)["available"] == 10_000


def test_the_sweep_expires_lapsed_holds_in_bounded_batches(
    accounts_api: Api, transfers_api: Api, alice: str, bob: str, runtime, db
) -> None:
    ids = []
    for _ in range(5):
        body = reserve_body(alice, bob, 100)
        transfers_api.call("POST", "/v1/transfers", body)
        ids.append(body["id"])
        lapse(db, body["id"])
    live = reserve_body(alice, bob, 100, timeout_s=600)
    transfers_api.call("POST", "/v1/transfers", live)
    assert transfer_service.sweep_expired(runtime.db, batch_max=2) == 2
    assert transfer_service.sweep_expired(runtime.db, batch_max=10) == 3
    assert transfer_service.sweep_expired(runtime.db, batch_max=10) == 0
    with db.engine.connect() as c:
        states = dict(
            c.execute(
                sa.text("SELECT id::text, state FROM transfers WHERE id::text = ANY(:ids)"),
                {"ids": [*ids, live["id"]]},
            ).fetchall()
        )
    assert [states[i] for i in ids] == ["expired"] * 5 and states[live["id"]] == "reserved"
    assert balance(accounts_api, alice) == {
        "posted": 10_000,
        "available": 9_900,
        "debits_reserved": 100,
        "credits_reserved": 0,
    }
    expired_events = snapshot(db)["outbox"]
    assert sum("dev.holdfast.transfer.expired.v1" in row for row in expired_events) == 5
    check_invariants(db)


def test_a_ping_event_runs_the_sweep(transfers_api: Api, alice: str, bob: str, db) -> None:
    body = reserve_body(alice, bob, 100)
    transfers_api.call("POST", "/v1/transfers", body)
    lapse(db, body["id"])
    response = transfers_api.client.post(
        "/",
        headers={
            "ce-specversion": "1.0",
            "ce-type": "dev.knative.sources.ping",
            "ce-source": "/ping",
            "ce-id": "1",
            "content-type": "application/json",
        },
        data=b'{"task":"expire"}',
    )
    assert response.status_code == 200
    with db.engine.connect() as c:
        assert (
            c.execute(
                sa.text("SELECT state FROM transfers WHERE id = :i"), {"i": body["id"]}
            ).scalar()
            == "expired"
        )


def test_customers_cannot_see_or_move_others_transfers(
    transfers_api: Api, alice: str, bob: str, db
) -> None:
    body = reserve_body(alice, bob)
    transfers_api.call("POST", "/v1/transfers", body)
    before = snapshot(db)
    for method, path in [
        ("GET", f"/v1/transfers/{body['id']}"),
        ("POST", f"/v1/transfers/{body['id']}/confirm"),
        ("POST", f"/v1/transfers/{body['id']}/cancel"),
    ]:
        response = transfers_api.call(method, path, sub="mallory")
        assert (response.status_code, response.json["code"]) == (404, "transfer_not_found")
    assert snapshot(db) == before
    # The payee sees the transfer (it touches their account) but cannot cancel it.
    assert transfers_api.call("GET", f"/v1/transfers/{body['id']}", sub="bob").status_code == 200
    assert (
        transfers_api.call("POST", f"/v1/transfers/{body['id']}/cancel", sub="bob").status_code
        == 404
    )
    read_only = transfers_api.call(
        "POST", "/v1/transfers", reserve_body(alice, bob), scope="transfers:read"
    )
    assert read_only.status_code == 403


def test_list_filters_and_paginates(
    accounts_api: Api, transfers_api: Api, alice: str, bob: str
) -> None:
    made = []
    for i in range(7):
        body = reserve_body(alice, bob, 10 + i)
        transfers_api.call("POST", "/v1/transfers", body)
        made.append(body["id"])
    transfers_api.call("POST", f"/v1/transfers/{made[0]}/confirm")
    seen: list[str] = []
    after = None
    while True:
        query = f"/v1/transfers?account_id={alice}&limit=3" + (f"&after={after}" if after else "")
        page = transfers_api.call("GET", query).json
        seen += [t["id"] for t in page["transfers"]]
        after = page["next"]
        if after is None:
            break
    assert [i for i in seen if i in made] == made  # oldest first, none lost, none repeated
    confirmed = transfers_api.call("GET", f"/v1/transfers?account_id={alice}&state=confirmed").json
    assert made[0] in [t["id"] for t in confirmed["transfers"]]
    assert all(t["state"] == "confirmed" for t in confirmed["transfers"])
    mine = transfers_api.call("GET", "/v1/transfers", sub="bob").json["transfers"]
    assert {t["id"] for t in mine} >= set(made)
    assert (
        transfers_api.call("GET", f"/v1/transfers?account_id={alice}", sub="mallory").json[
            "transfers"
        ]
        == []
    )
    for bad in ("limit=0", "limit=1001", "limit=x", "state=pending", "after=%%%", "account_id=x"):
        response = transfers_api.call("GET", f"/v1/transfers?{bad}")
        assert (response.status_code, response.json["code"]) == (422, "validation_error"), bad


def test_batch_answers_each_operation_as_the_single_call_would(
    accounts_api: Api, transfers_api: Api, alice: str, bob: str, db
) -> None:
    a, b, c = (reserve_body(alice, bob, n) for n in (100, 200, 20_000))
    operations = [
        {"op": "reserve", **a},
        {"op": "reserve", **b},
        {"op": "confirm", "id": a["id"]},
        {"op": "cancel", "id": b["id"]},
        {"op": "reserve", **c},  # insufficient funds
        {"op": "confirm", "id": str(uuid.uuid4())},  # unknown
        {"op": "reserve", **a},  # replay inside the batch
        {"op": "reserve", **reserve_body(alice, bob, 1.5)},  # bad input
        {"op": "refund", "id": a["id"]},
    ]
    response = transfers_api.call("POST", "/v1/transfers:batch", {"operations": operations})
    assert response.status_code == 200
    results = response.json["results"]
    assert [r.get("state") or r.get("code") for r in results] == [
        "reserved",
        "reserved",
        "confirmed",
        "cancelled",
        "insufficient_funds",
        "transfer_not_found",
        "reserved",
        "validation_error",
        "validation_error",
    ]
    assert results[6] == results[0]
    assert transfers_api.call("GET", f"/v1/transfers/{a['id']}").json == results[2]
    assert balance(accounts_api, bob)["posted"] == 100
    check_invariants(db)


@pytest.mark.parametrize(
    "operations", [[], [{"op": "cancel", "id": str(uuid.uuid4())}] * 1001, "x"]
)
def test_batch_size_is_bounded(transfers_api: Api, db, operations: Any) -> None:
    before = snapshot(db)
    response = transfers_api.call("POST", "/v1/transfers:batch", {"operations": operations})
    assert (response.status_code, response.json["code"]) == (422, "validation_error")
    assert snapshot(db) == before
