"""Multi-currency transfers over HTTP and CloudEvents (contract v1.1).

The case throughout: a card payment of 100.00 EUR settled as 108.00 USD. EUR leaves the
customer's account for the bank's EUR position account, USD leaves the bank's USD position
account for the merchant's, in one transfer of two legs: reserved, confirmed, cancelled or
expired as one, and refused as one when either currency falls short.

Time is never waited for: expiry moves the reservation's `expires_at` (and its holds') into
the past on the database's clock, which is the clock every rule reads (`helpers.lapse`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import sqlalchemy as sa
from cloudevents.http import from_http

from holdfast.adapters.database import Database
from holdfast.adapters.tokens import DevIssuer
from holdfast.services import transfers as transfer_service
from tests.conftest import Api, function_client, snapshot
from tests.integration.events.conftest import cloudevent, post_event
from tests.integration.helpers import OPS, check_invariants, lapse, open_account

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "events"
RESERVE_EVENT = "dev.holdfast.transfer.reserve.v1"
CONFIRM_EVENT = "dev.holdfast.transfer.confirm.v1"
EUR_IN, USD_OUT = 10_000, 10_800  # 100.00 EUR in, 108.00 USD out


@dataclass(frozen=True)
class Fx:
    customer: str  # EUR, alice's
    position_eur: str  # EUR, the bank's, no limit
    position_usd: str  # USD, the bank's, may not go below zero
    merchant: str  # USD

    def accounts(self) -> list[str]:
        return [self.customer, self.position_eur, self.position_usd, self.merchant]


def fund(transfers_api: Api, accounts_api: Api, account: str, amount: int, currency: str) -> None:
    source = open_account(accounts_api, owner="bank", currency=currency, overdraft_limit=None)
    body = {
        "id": str(uuid.uuid4()),
        "debit_account_id": source,
        "credit_account_id": account,
        "amount": amount,
        "currency": currency,
        "immediate": True,
    }
    response = transfers_api.call("POST", "/v1/transfers", body, **OPS)
    assert response.status_code == 201, response.json


def open_fx(accounts_api: Api, transfers_api: Api, *, dollars: int = 100_000) -> Fx:
    fx = Fx(
        customer=open_account(accounts_api, owner="alice"),
        position_eur=open_account(accounts_api, owner="bank", overdraft_limit=None),
        position_usd=open_account(accounts_api, owner="bank", currency="USD"),
        merchant=open_account(accounts_api, owner="merchant", currency="USD"),
    )
    fund(transfers_api, accounts_api, fx.customer, 50_000, "EUR")
    fund(transfers_api, accounts_api, fx.position_usd, dollars, "USD")
    return fx


@pytest.fixture
def fx(accounts_api: Api, transfers_api: Api) -> Fx:
    return open_fx(accounts_api, transfers_api)


def payment(fx: Fx, eur: int = EUR_IN, usd: int = USD_OUT, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "legs": [
            {
                "debit_account_id": fx.customer,
                "credit_account_id": fx.position_eur,
                "amount": eur,
                "currency": "EUR",
            },
            {
                "debit_account_id": fx.position_usd,
                "credit_account_id": fx.merchant,
                "amount": usd,
                "currency": "USD",
            },
        ],
        **extra,
    }


def balances(accounts_api: Api, fx: Fx) -> list[tuple[int, int]]:
    """(posted, available) of the customer, EUR position, USD position, merchant."""
    found = []
    for account in fx.accounts():
        body = accounts_api.call("GET", f"/v1/accounts/{account}", **OPS).json
        found.append((body["balance"]["posted"], body["balance"]["available"]))
    return found


BEFORE = [(50_000, 50_000), (0, 0), (100_000, 100_000), (0, 0)]
RESERVED = [(50_000, 40_000), (0, 0), (100_000, 89_200), (0, 0)]
AFTER = [(40_000, 40_000), (10_000, 10_000), (89_200, 89_200), (10_800, 10_800)]


def entries(db: Database, transfer_id: str) -> list[tuple[int, str, str, int, str]]:
    with db.engine.connect() as c:
        rows = c.execute(
            sa.text(
                "SELECT leg, direction, account_id::text, amount, currency FROM ledger_entries "
                "WHERE transfer_id = :t ORDER BY leg, direction DESC"
            ),
            {"t": transfer_id},
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def events(db: Database, transfer_id: str) -> list[tuple[str, dict[str, Any]]]:
    with db.engine.connect() as c:
        rows = c.execute(
            sa.text(
                "SELECT type, data FROM outbox WHERE subject = :s ORDER BY created_at, position"
            ),
            {"s": transfer_id},
        )
        return [(row.type, row.data) for row in rows]


def check_event_schema(event_type: str, data: dict[str, Any]) -> None:
    schema = json.loads((SCHEMAS / f"{event_type}.json").read_text())
    jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)


LEGS = [
    ("EUR", 10_000),
    ("USD", 10_800),
]


def test_a_payment_across_currencies_is_reserved_then_confirmed_as_one(
    accounts_api: Api, transfers_api: Api, fx: Fx, db: Database, issuer: DevIssuer
) -> None:
    assert balances(accounts_api, fx) == BEFORE
    body = payment(fx)
    reserved = transfers_api.call("POST", "/v1/transfers", body, **OPS)
    assert reserved.status_code == 201, reserved.json
    assert reserved.json["state"] == "reserved"
    assert reserved.json["currency"] is None
    assert [(leg["currency"], leg["amount"]) for leg in reserved.json["legs"]] == LEGS
    assert balances(accounts_api, fx) == RESERVED
    assert entries(db, body["id"]) == []

    confirmed = transfers_api.call("POST", f"/v1/transfers/{body['id']}/confirm", **OPS)
    assert confirmed.status_code == 200 and confirmed.json["state"] == "confirmed"
    assert balances(accounts_api, fx) == AFTER
    assert entries(db, body["id"]) == [
        (0, "debit", fx.customer, 10_000, "EUR"),
        (0, "credit", fx.position_eur, 10_000, "EUR"),
        (1, "debit", fx.position_usd, 10_800, "USD"),
        (1, "credit", fx.merchant, 10_800, "USD"),
    ]
    read = transfers_api.call("GET", f"/v1/transfers/{body['id']}", **OPS)
    assert read.json == confirmed.json
    # The first answer again, with every leg's currency.
    again = transfers_api.call("POST", "/v1/transfers", body, **OPS)
    assert (again.status_code, again.json) == (201, reserved.json)
    assert [kind for kind, _ in events(db, body["id"])] == [
        "dev.holdfast.transfer.reserved.v1",
        "dev.holdfast.transfer.confirmed.v1",
    ]
    for kind, data in events(db, body["id"]):
        check_event_schema(kind, data)
        assert data["currency"] is None
        assert [(leg["currency"], leg["amount"]) for leg in data["legs"]] == LEGS
    # The trial balance stays per currency, each balanced on its own.
    ledger_api = Api(function_client("ledger"), issuer)
    trial = ledger_api.call("GET", "/v1/ledger/trial-balance", sub="auditor", scope="ledger:read")
    assert trial.status_code == 200 and trial.json["balanced"] is True
    totals = {t["currency"]: (t["debits"], t["credits"]) for t in trial.json["currencies"]}
    assert totals == {"EUR": (60_000, 60_000), "USD": (110_800, 110_800)}
    check_invariants(db)


def test_a_cancel_releases_every_currency(
    accounts_api: Api, transfers_api: Api, fx: Fx, db: Database
) -> None:
    body = payment(fx)
    transfers_api.call("POST", "/v1/transfers", body, **OPS)
    cancelled = transfers_api.call("POST", f"/v1/transfers/{body['id']}/cancel", **OPS)
    assert cancelled.status_code == 200 and cancelled.json["state"] == "cancelled"
    assert [leg["currency"] for leg in cancelled.json["legs"]] == ["EUR", "USD"]
    assert balances(accounts_api, fx) == BEFORE
    assert entries(db, body["id"]) == [] and snapshot(db)["holds"] == []
    late = transfers_api.call("POST", f"/v1/transfers/{body['id']}/confirm", **OPS)
    assert (late.status_code, late.json["code"]) == (409, "transfer_cancelled")
    kind, data = events(db, body["id"])[-1]
    assert kind == "dev.holdfast.transfer.cancelled.v1"
    check_event_schema(kind, data)
    check_invariants(db)


def test_an_expired_payment_releases_every_currency_at_once(
    accounts_api: Api, transfers_api: Api, fx: Fx, db: Database, runtime: Any
) -> None:
    body = payment(fx, timeout_s=600)
    transfers_api.call("POST", "/v1/transfers", body, **OPS)
    assert balances(accounts_api, fx) == RESERVED
    lapse(db, body["id"])
    # No sweep yet: every read and rule already sees both holds released.
    assert len(snapshot(db)["holds"]) == 4
    assert balances(accounts_api, fx) == BEFORE
    read = transfers_api.call("GET", f"/v1/transfers/{body['id']}", **OPS)
    assert read.json["state"] == "expired"
    late = transfers_api.call("POST", f"/v1/transfers/{body['id']}/confirm", **OPS)
    assert (late.status_code, late.json["code"]) == (409, "transfer_expired")
    # The confirm wrote the expiry (one event); the sweep then finds nothing left to do.
    assert transfer_service.sweep_expired(runtime.db) == 0
    assert snapshot(db)["holds"] == []
    kind, data = events(db, body["id"])[-1]
    assert kind == "dev.holdfast.transfer.expired.v1"
    check_event_schema(kind, data)
    assert [leg["currency"] for leg in data["legs"]] == ["EUR", "USD"]
    assert entries(db, body["id"]) == []
    assert balances(accounts_api, fx) == BEFORE
    check_invariants(db)


def test_the_sweep_expires_a_payment_across_currencies(
    accounts_api: Api, transfers_api: Api, fx: Fx, db: Database, runtime: Any
) -> None:
    body = payment(fx, timeout_s=600)
    transfers_api.call("POST", "/v1/transfers", body, **OPS)
    lapse(db, body["id"])
    assert transfer_service.sweep_expired(runtime.db) == 1
    assert snapshot(db)["holds"] == []
    cancel = transfers_api.call("POST", f"/v1/transfers/{body['id']}/cancel", **OPS)
    assert (cancel.status_code, cancel.json["state"]) == (200, "expired")
    assert balances(accounts_api, fx) == BEFORE
    check_invariants(db)


@pytest.mark.parametrize("immediate", [False, True])
def test_a_shortfall_in_one_currency_refuses_every_leg_and_changes_nothing(
    accounts_api: Api, transfers_api: Api, db: Database, immediate: bool
) -> None:
    fx = open_fx(accounts_api, transfers_api, dollars=USD_OUT - 1)  # the bank is a cent short
    before_balances = balances(accounts_api, fx)
    before = snapshot(db)
    body = payment(fx, immediate=immediate)
    refused = transfers_api.call("POST", "/v1/transfers", body, **OPS)
    assert (refused.status_code, refused.json["code"]) == (422, "insufficient_funds")
    assert fx.position_usd in refused.json["detail"]
    assert snapshot(db) == before
    assert balances(accounts_api, fx) == before_balances
    missing = transfers_api.call("GET", f"/v1/transfers/{body['id']}", **OPS)
    assert missing.status_code == 404


def _usd_on_a_eur_account(fx: Fx) -> dict[str, Any]:
    body = payment(fx)
    body["legs"][1]["credit_account_id"] = fx.position_eur
    return body


def _top_level_eur_and_a_usd_leg(fx: Fx) -> dict[str, Any]:
    return {**payment(fx), "currency": "EUR"}


def _no_currency_anywhere(fx: Fx) -> dict[str, Any]:
    body = payment(fx)
    del body["legs"][0]["currency"]
    return body


def _not_a_currency(fx: Fx) -> dict[str, Any]:
    body = payment(fx)
    body["legs"][1]["currency"] = "usd"
    return body


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (_usd_on_a_eur_account, 422, "currency_mismatch"),
        (_top_level_eur_and_a_usd_leg, 422, "currency_mismatch"),
        (_no_currency_anywhere, 422, "validation_error"),
        (_not_a_currency, 422, "validation_error"),
    ],
)
def test_currency_rules_refuse_the_whole_transfer(
    transfers_api: Api, fx: Fx, db: Database, make: Any, status: int, code: str
) -> None:
    before = snapshot(db)
    response = transfers_api.call("POST", "/v1/transfers", make(fx), **OPS)
    assert (response.status_code, response.json["code"]) == (status, code), response.json
    assert snapshot(db) == before


def test_a_leg_inherits_the_top_level_currency(
    accounts_api: Api, transfers_api: Api, fx: Fx, db: Database
) -> None:
    bob = open_account(accounts_api, owner="bob")
    body = {
        "id": str(uuid.uuid4()),
        "currency": "EUR",
        "legs": [
            {"debit_account_id": fx.customer, "credit_account_id": bob, "amount": 100},
            {
                "debit_account_id": fx.customer,
                "credit_account_id": fx.position_eur,
                "amount": 5,
                "currency": "EUR",
            },
        ],
        "immediate": True,
    }
    response = transfers_api.call("POST", "/v1/transfers", body, **OPS)
    assert response.status_code == 201, response.json
    assert response.json["currency"] == "EUR" and response.json["amount"] == 105
    assert [leg["currency"] for leg in response.json["legs"]] == ["EUR", "EUR"]
    assert [e[4] for e in entries(db, body["id"])] == ["EUR"] * 4


def test_a_single_currency_client_sees_what_it_always_did_plus_leg_currencies(
    accounts_api: Api, transfers_api: Api, fx: Fx
) -> None:
    bob = open_account(accounts_api, owner="bob")
    body = {
        "id": str(uuid.uuid4()),
        "debit_account_id": fx.customer,
        "credit_account_id": bob,
        "amount": 250,
        "currency": "EUR",
    }
    response = transfers_api.call("POST", "/v1/transfers", body)
    assert response.status_code == 201, response.json
    assert response.json["currency"] == "EUR" and response.json["amount"] == 250
    assert response.json["debit_account_id"] == fx.customer
    assert response.json["legs"] == [
        {
            "debit_account_id": fx.customer,
            "credit_account_id": bob,
            "amount": 250,
            "currency": "EUR",
        }
    ]


def test_a_replay_with_another_currency_is_a_conflict(
    transfers_api: Api, fx: Fx, db: Database
) -> None:
    body = payment(fx)
    transfers_api.call("POST", "/v1/transfers", body, **OPS)
    before = snapshot(db)
    other = payment(fx)
    other["id"] = body["id"]
    other["legs"][1]["currency"] = "CAD"
    conflict = transfers_api.call("POST", "/v1/transfers", other, **OPS)
    assert (conflict.status_code, conflict.json["code"]) == (409, "exists_with_different_fields")
    assert "legs" in conflict.json["detail"]
    spelled = {**body, "currency": "EUR"}  # contradicts the USD leg
    assert transfers_api.call("POST", "/v1/transfers", spelled, **OPS).json["code"] == (
        "currency_mismatch"
    )
    assert snapshot(db) == before


def test_the_batch_endpoint_is_all_or_nothing_per_payment(
    accounts_api: Api, transfers_api: Api, fx: Fx, db: Database
) -> None:
    first, too_big = payment(fx), payment(fx, eur=1, usd=100_000 - USD_OUT + 1)
    operations = [
        {"op": "reserve", **first},
        {"op": "reserve", **too_big},  # the dollars the first one left are one cent short
        {"op": "confirm", "id": first["id"]},
        {"op": "confirm", "id": too_big["id"]},
        {"op": "reserve", **{**payment(fx), "currency": "USD"}},
    ]
    response = transfers_api.call("POST", "/v1/transfers:batch", {"operations": operations}, **OPS)
    assert response.status_code == 200
    results = response.json["results"]
    assert results[0]["state"] == "reserved" and results[0]["currency"] is None
    assert results[1]["code"] == "insufficient_funds"
    assert results[2]["state"] == "confirmed"
    assert [leg["currency"] for leg in results[2]["legs"]] == ["EUR", "USD"]
    assert results[3]["code"] == "transfer_not_found"
    assert results[4]["code"] == "currency_mismatch"
    assert balances(accounts_api, fx) == AFTER
    assert entries(db, too_big["id"]) == []
    check_invariants(db)


def test_cloudevents_reserve_and_confirm_across_currencies(
    accounts_api: Api, transfers_api: Api, fx: Fx, db: Database
) -> None:
    body = payment(fx)
    reserved = post_event(transfers_api, cloudevent(RESERVE_EVENT, body))
    assert reserved.status_code == 200 and not reserved.data
    assert balances(accounts_api, fx) == RESERVED
    confirmed = post_event(transfers_api, cloudevent(CONFIRM_EVENT, {"id": body["id"]}))
    assert confirmed.status_code == 200
    assert balances(accounts_api, fx) == AFTER
    assert [kind for kind, _ in events(db, body["id"])] == [
        "dev.holdfast.transfer.reserved.v1",
        "dev.holdfast.transfer.confirmed.v1",
    ]
    # A shortfall in dollars: a rejection reply, nothing reserved in either currency.
    short = payment(fx, usd=100_000)
    before = balances(accounts_api, fx)
    answer = post_event(transfers_api, cloudevent(RESERVE_EVENT, short))
    assert answer.status_code == 200
    reply = from_http(dict(answer.headers), answer.data)
    assert reply["type"] == "dev.holdfast.transfer.rejected.v1"
    assert reply.data["code"] == "insufficient_funds"
    assert balances(accounts_api, fx) == before
    # Data that contradicts itself (EUR on the transfer, USD on a leg) is malformed: 400.
    contradictory = {**payment(fx), "currency": "EUR"}
    malformed = post_event(transfers_api, cloudevent(RESERVE_EVENT, contradictory))
    assert malformed.status_code == 400
    assert malformed.json["code"] == "malformed_request"
    check_invariants(db)


def test_a_transfer_stored_before_leg_currencies_reads_and_confirms_in_its_currency(
    accounts_api: Api, transfers_api: Api, fx: Fx, db: Database
) -> None:
    """Rows written before v1.1 keep the currency on the transfer only: their legs inherit it."""
    bob = open_account(accounts_api, owner="bob")
    body = {
        "id": str(uuid.uuid4()),
        "debit_account_id": fx.customer,
        "credit_account_id": bob,
        "amount": 700,
        "currency": "EUR",
    }
    reserved = transfers_api.call("POST", "/v1/transfers", body, **OPS)
    with db.engine.begin() as c:
        c.execute(
            sa.text(
                "UPDATE transfers SET legs = (SELECT jsonb_agg(leg - 'currency') "
                "FROM jsonb_array_elements(legs) AS leg) WHERE id = :i"
            ),
            {"i": body["id"]},
        )
        stored = c.execute(sa.text("SELECT legs FROM transfers WHERE id = :i"), {"i": body["id"]})
        assert "currency" not in stored.scalar_one()[0]
    read = transfers_api.call("GET", f"/v1/transfers/{body['id']}", **OPS)
    assert read.json["legs"] == reserved.json["legs"]
    again = transfers_api.call("POST", "/v1/transfers", body, **OPS)
    assert (again.status_code, again.json) == (201, reserved.json)
    confirmed = transfers_api.call("POST", f"/v1/transfers/{body['id']}/confirm", **OPS)
    assert confirmed.status_code == 200
    assert [e[4] for e in entries(db, body["id"])] == ["EUR", "EUR"]
    check_invariants(db)
