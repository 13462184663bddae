"""The accounts function over HTTP, served by functions-framework, on the real database."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.conftest import Api, snapshot


def new_account(**fields: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "currency": "EUR", "owner": "alice", **fields}


def test_open_returns_the_account_with_defaults(accounts_api: Api) -> None:
    body = new_account(metadata={"name": "Alice A."})
    response = accounts_api.call("POST", "/v1/accounts", body)
    assert response.status_code == 201
    assert response.json | {"created_at": None} == {
        "id": body["id"],
        "currency": "EUR",
        "owner": "alice",
        "status": "open",
        "normal_balance": "credit",
        "overdraft_limit": 0,
        "debits_posted": 0,
        "credits_posted": 0,
        "debits_reserved": 0,
        "credits_reserved": 0,
        "balance": {"posted": 0, "available": 0},
        "metadata": {"name": "Alice A."},
        "created_at": None,
    }
    assert response.json["created_at"].endswith("Z")
    got = accounts_api.call("GET", f"/v1/accounts/{body['id']}")
    assert got.status_code == 200 and got.json == response.json


def test_open_is_idempotent_and_conflicts_name_the_fields(accounts_api: Api, db) -> None:
    body = new_account(overdraft_limit=None, normal_balance="debit")
    first = accounts_api.call("POST", "/v1/accounts", body)
    again = accounts_api.call("POST", "/v1/accounts", body)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json == first.json
    before = snapshot(db)
    conflict = accounts_api.call(
        "POST", "/v1/accounts", {**body, "currency": "USD", "overdraft_limit": 5}
    )
    assert conflict.status_code == 409
    assert conflict.json["code"] == "exists_with_different_fields"
    assert "currency" in conflict.json["detail"] and "overdraft_limit" in conflict.json["detail"]
    assert snapshot(db) == before


def test_only_one_account_and_one_event_from_concurrent_creates(accounts_api: Api, db) -> None:
    body = new_account()

    def create(_: int) -> tuple[int, Any]:
        response = accounts_api.call("POST", "/v1/accounts", body)
        return response.status_code, response.json

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(create, range(32)))
    assert {status for status, _ in answers} == {201}
    assert len({str(sorted(b.items())) for _, b in answers}) == 1
    rows = snapshot(db)
    assert len(rows["accounts"]) == 1
    assert len(rows["outbox"]) == 1


BAD_BODIES: list[tuple[str, Any]] = [
    ("id not a uuid", new_account(id="42")),
    ("missing id", {"currency": "EUR", "owner": "alice"}),
    ("missing currency", {"id": str(uuid.uuid4()), "owner": "alice"}),
    ("lowercase currency", new_account(currency="eur")),
    ("unknown currency", new_account(currency="ABC")),
    ("empty owner", new_account(owner="")),
    ("owner too long", new_account(owner="a" * 300)),
    ("bad normal balance", new_account(normal_balance="asset")),
    ("negative overdraft", new_account(overdraft_limit=-1)),
    ("float overdraft", new_account(overdraft_limit=1.5)),
    ("string overdraft", new_account(overdraft_limit="10")),
    ("boolean overdraft", new_account(overdraft_limit=True)),
    ("huge overdraft", new_account(overdraft_limit=2**53)),
    ("metadata not an object", new_account(metadata=["x"])),
    ("metadata too large", new_account(metadata={"x": "y" * 9000})),
    ("unknown field", new_account(colour="red")),
    ("body is a list", [new_account()]),
    ("body is a number", 5),
]


@pytest.mark.parametrize(("name", "body"), BAD_BODIES, ids=[n for n, _ in BAD_BODIES])
def test_bad_input_is_422_problem_json_and_changes_nothing(
    accounts_api: Api, db, name: str, body: Any
) -> None:
    before = snapshot(db)
    response = accounts_api.call("POST", "/v1/accounts", body)
    assert response.status_code == 422, response.json
    assert response.mimetype == "application/problem+json"
    assert response.json["code"] == "validation_error"
    assert response.json["status"] == 422 and response.json["title"] and response.json["detail"]
    assert snapshot(db) == before


@pytest.mark.parametrize(
    ("raw", "code", "status"),
    [
        (b"{not json", "malformed_request", 400),
        (b"", "malformed_request", 400),
        (b"\xff\xfe", "malformed_request", 400),
    ],
)
def test_malformed_bodies_are_400(
    accounts_api: Api, db, raw: bytes, code: str, status: int
) -> None:
    before = snapshot(db)
    response = accounts_api.call(
        "POST", "/v1/accounts", raw=raw, headers={"Content-Type": "application/json"}
    )
    assert (response.status_code, response.json["code"]) == (status, code)
    assert snapshot(db) == before


def test_no_token_is_401_and_a_missing_scope_is_403(accounts_api: Api, db) -> None:
    before = snapshot(db)
    response = accounts_api.client.post("/v1/accounts", json=new_account())
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    response = accounts_api.call("POST", "/v1/accounts", new_account(), scope="accounts:read")
    assert (response.status_code, response.json["code"]) == (403, "insufficient_scope")
    response = accounts_api.call("POST", "/v1/accounts", new_account(), scope="ledger:read")
    assert response.status_code == 403
    assert snapshot(db) == before


def test_customers_see_only_their_own_accounts(accounts_api: Api) -> None:
    body = new_account()
    accounts_api.call("POST", "/v1/accounts", body)
    for method, path in [
        ("GET", f"/v1/accounts/{body['id']}"),
        ("POST", f"/v1/accounts/{body['id']}/freeze"),
        ("POST", f"/v1/accounts/{body['id']}/close"),
    ]:
        response = accounts_api.call(method, path, sub="mallory")
        assert response.status_code == 404, path
        assert response.json["code"] == "account_not_found"
        assert "alice" not in response.get_data(as_text=True)
    operator = accounts_api.call(
        "GET", f"/v1/accounts/{body['id']}", sub="ops", scope="accounts:read operator"
    )
    assert operator.status_code == 200


def test_opening_for_someone_else_needs_operator(accounts_api: Api, db) -> None:
    before = snapshot(db)
    response = accounts_api.call("POST", "/v1/accounts", new_account(owner="bob"))
    assert (response.status_code, response.json["code"]) == (403, "forbidden")
    assert snapshot(db) == before
    response = accounts_api.call(
        "POST",
        "/v1/accounts",
        new_account(owner="bob"),
        sub="ops",
        scope="accounts:write operator",
    )
    assert response.status_code == 201


def test_unknown_account_and_unknown_route(accounts_api: Api) -> None:
    response = accounts_api.call("GET", f"/v1/accounts/{uuid.uuid4()}")
    assert (response.status_code, response.json["code"]) == (404, "account_not_found")
    assert accounts_api.call("GET", "/v1/accounts/not-a-uuid").status_code == 404
    response = accounts_api.call("DELETE", f"/v1/accounts/{uuid.uuid4()}")
    assert response.status_code == 405


def test_freeze_unfreeze_close(accounts_api: Api, transfers_api: Api) -> None:
    body = new_account()
    accounts_api.call("POST", "/v1/accounts", body)
    path = f"/v1/accounts/{body['id']}"
    assert accounts_api.call("POST", path + "/freeze").json["status"] == "frozen"
    assert accounts_api.call("POST", path + "/freeze").json["status"] == "frozen"
    refused = accounts_api.call("POST", path + "/unfreeze")
    assert (refused.status_code, refused.json["code"]) == (403, "forbidden")
    ops = {"sub": "ops", "scope": "accounts:write operator"}
    assert accounts_api.call("POST", path + "/unfreeze", **ops).json["status"] == "open"
    assert accounts_api.call("POST", path + "/close").json["status"] == "closed"
    assert accounts_api.call("POST", path + "/close").json["status"] == "closed"
    for action in ("freeze", "unfreeze"):
        response = accounts_api.call("POST", f"{path}/{action}", **ops)
        assert (response.status_code, response.json["code"]) == (409, "account_not_open")


def test_close_refuses_a_balance_or_a_reservation(accounts_api: Api, transfers_api: Api) -> None:
    funding = new_account(overdraft_limit=None)
    customer = new_account()
    for body in (funding, customer):
        accounts_api.call("POST", "/v1/accounts", body)
    transfer = {
        "id": str(uuid.uuid4()),
        "debit_account_id": funding["id"],
        "credit_account_id": customer["id"],
        "amount": 100,
        "currency": "EUR",
    }
    assert transfers_api.call("POST", "/v1/transfers", transfer).status_code == 201
    response = accounts_api.call("POST", f"/v1/accounts/{funding['id']}/close")
    assert (response.status_code, response.json["code"]) == (409, "account_not_empty")
    transfers_api.call("POST", f"/v1/transfers/{transfer['id']}/confirm")
    response = accounts_api.call("POST", f"/v1/accounts/{customer['id']}/close")
    assert (response.status_code, response.json["code"]) == (409, "account_not_empty")
    got = accounts_api.call("GET", f"/v1/accounts/{customer['id']}")
    assert got.json["status"] == "open"


def test_health_and_readiness_need_no_token(accounts_api: Api) -> None:
    assert accounts_api.client.get("/healthz").status_code == 200
    ready = accounts_api.client.get("/readyz")
    assert (ready.status_code, ready.json) == (200, {"status": "ready"})


def test_security_headers_on_every_answer(accounts_api: Api) -> None:
    for response in (
        accounts_api.call("GET", f"/v1/accounts/{uuid.uuid4()}"),
        accounts_api.client.get("/v1/accounts/x"),
    ):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-store"


def test_oversized_body_is_413_before_parsing(accounts_api: Api, db) -> None:
    before = snapshot(db)
    response = accounts_api.call(
        "POST",
        "/v1/accounts",
        raw=b"{" + b" " * (5 * 1024 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert snapshot(db) == before


def test_events_under_a_public_host_name_are_refused(accounts_api: Api, db) -> None:
    before = snapshot(db)
    response = accounts_api.client.post(
        "/",
        base_url="https://api.bank.example",
        headers={
            "ce-specversion": "1.0",
            "ce-type": "dev.holdfast.account.open.v1",
            "ce-source": "/x",
            "ce-id": "1",
            "content-type": "application/json",
        },
        data='{"id": "6f1c0a6e-1d3e-4c1a-9b7e-000000000001", "currency": "EUR", "owner": "x"}',
    )
    assert response.status_code == 404
    assert snapshot(db) == before
