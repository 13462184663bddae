"""Fixtures for the security tests: the whole `/v1` API in one WSGI client (routed like the
gateway, rate limits off unless a test sets them), tokens of any scope, and a small world
of two customers (alice, bob) and the bank with accounts and transfers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from werkzeug.test import Client

from tests.conftest import Api
from tests.fuzz.service import EVERY_SCOPE, gateway_app, unlimited

CUSTOMER = "accounts:read accounts:write transfers:read transfers:write"


class Http(Api):
    """The whole `/v1` API through one WSGI client; a customer's scopes unless told."""

    default_scope = CUSTOMER


@dataclass
class World:
    bank: str  # the bank's unlimited funding account
    alice: str  # alice's account, funded
    alice_held: str  # alice's reservation (alice -> bank), open for a day
    alice_paid: str  # bank -> alice, confirmed
    bob: str  # bob's account, funded
    bob_held: str  # bob's reservation (bob -> bank)


@pytest.fixture
def http(runtime, issuer) -> Http:
    unlimited(runtime)
    return Http(Client(gateway_app()), issuer)


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def world(http: Http) -> World:
    def ok(method: str, path: str, body: Any) -> None:
        answer = http.call(method, path, body, sub="bank", scope=EVERY_SCOPE)
        assert answer.status_code in {200, 201}, answer.get_json()

    ids = {name: new_id() for name in ("bank", "alice", "bob")}
    ok(
        "POST",
        "/v1/accounts",
        {"id": ids["bank"], "currency": "EUR", "owner": "bank", "overdraft_limit": None},
    )
    for owner in ("alice", "bob"):
        ok(
            "POST",
            "/v1/accounts",
            {
                "id": ids[owner],
                "currency": "EUR",
                "owner": owner,
                "metadata": {"name": owner.title()},
            },
        )
    transfers = {name: new_id() for name in ("alice_paid", "bob_paid", "alice_held", "bob_held")}
    for owner in ("alice", "bob"):
        ok(
            "POST",
            "/v1/transfers",
            {
                "id": transfers[f"{owner}_paid"],
                "currency": "EUR",
                "debit_account_id": ids["bank"],
                "credit_account_id": ids[owner],
                "amount": 10_000,
                "immediate": True,
            },
        )
        ok(
            "POST",
            "/v1/transfers",
            {
                "id": transfers[f"{owner}_held"],
                "currency": "EUR",
                "debit_account_id": ids[owner],
                "credit_account_id": ids["bank"],
                "amount": 100,
                "timeout_s": 86_400,
            },
        )
    return World(
        bank=ids["bank"],
        alice=ids["alice"],
        alice_held=transfers["alice_held"],
        alice_paid=transfers["alice_paid"],
        bob=ids["bob"],
        bob_held=transfers["bob_held"],
    )
