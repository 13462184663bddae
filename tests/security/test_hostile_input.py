"""Hostile input at the edge: what the fuzz runs found, pinned as exact cases.

Each case was a real bug the fuzz runs found (a 5xx, or the wrong answer to a malformed
event); they are fixed, and these tests keep them fixed. The rest pin limits that hold.
"""

from __future__ import annotations

import json
import uuid

import pytest

from holdfast import limits
from tests.conftest import Api, function_client, snapshot
from tests.fuzz.service import EVERY_SCOPE, unlimited

OPS = {"sub": "ops", "scope": EVERY_SCOPE}
DEEP = b"[" * 50_000 + b"]" * 50_000  # 100 KB of nesting: past json's recursion limit
EVENT_DEEP = b"[" * 30_000 + b"]" * 30_000  # 60 KB: under the 64 KiB event limit


@pytest.fixture
def apis(runtime, issuer) -> dict[str, Api]:
    unlimited(runtime)
    return {
        name: Api(function_client(name), issuer) for name in ("accounts", "transfers", "ledger")
    }


def structured(event_type: str, data: object, **attributes: object) -> bytes:
    envelope = {
        "specversion": "1.0",
        "type": event_type,
        "source": "/tests/hostile",
        "id": str(uuid.uuid4()),
        "data": data,
        **attributes,
    }
    return json.dumps(envelope).encode()


CE_JSON = {"content-type": "application/cloudevents+json"}


# -- sizes: refused before they are parsed -------------------------------------------------


def test_a_body_over_the_limit_is_413_before_it_is_read(apis, db) -> None:
    before = snapshot(db)
    too_big = b"{" + b" " * limits.request_body_bytes_max + b"}"
    for name, path in (("accounts", "/v1/accounts"), ("transfers", "/v1/transfers:batch")):
        answer = apis[name].call("POST", path, raw=too_big, **OPS)
        assert answer.status_code == 413, answer.data
        assert answer.json["code"] == "payload_too_large"
        assert answer.headers["Content-Type"] == "application/problem+json"
    assert snapshot(db) == before


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_an_event_over_64_kib_is_400_and_changes_nothing(apis, db, mode: str) -> None:
    account = {"id": str(uuid.uuid4()), "currency": "EUR", "owner": "x", "metadata": {}}
    account["metadata"] = {"pad": "x" * limits.event_bytes_max}
    if mode == "structured":
        headers, body = CE_JSON, structured("dev.holdfast.account.open.v1", account)
    else:
        headers = {
            "ce-specversion": "1.0",
            "ce-type": "dev.holdfast.account.open.v1",
            "ce-source": "/tests/hostile",
            "ce-id": "1",
            "content-type": "application/json",
        }
        body = json.dumps(account).encode()
    before = snapshot(db)
    answer = apis["accounts"].client.post("/", headers=headers, data=body)
    assert answer.status_code == 400 and "64 KiB" in answer.json["detail"]
    assert snapshot(db) == before


# -- found by the fuzz runs: each a bug with its fix --------------------------------------


def test_deeply_nested_json_is_400_not_500(apis, db) -> None:
    before = snapshot(db)
    answers = [
        apis["accounts"].call("POST", "/v1/accounts", raw=DEEP, **OPS).status_code,
        apis["transfers"]
        .call("POST", f"/v1/transfers/{uuid.uuid4()}/cancel", raw=DEEP)
        .status_code,
        apis["accounts"].client.post("/", headers=CE_JSON, data=EVENT_DEEP).status_code,
    ]
    assert answers == [400, 400, 400]
    assert snapshot(db) == before


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("ledger", "/v1/ledger/entries?limit=%C2%B2"),
        ("ledger", "/v1/ledger/entries?after=%C2%B2"),
        ("ledger", "/v1/ledger/checkpoints?after=%C2%B2"),
        ("ledger", "/v1/ledger/export?from=%C2%B2"),
        ("transfers", "/v1/transfers?limit=%C2%B2"),
    ],
)
def test_unicode_digits_in_a_number_are_422_not_500(apis, name: str, path: str) -> None:
    assert apis[name].call("GET", path, **OPS).status_code == 422


def test_a_checkpoint_number_past_bigint_is_404(apis) -> None:
    answer = apis["ledger"].call("GET", f"/v1/ledger/checkpoints/{2**63}", **OPS)
    assert answer.status_code == 404


@pytest.mark.parametrize("as_of", ["0001-01-01T00:00:00%2B14:00", "9999-12-31T23:59:59-14:00"])
def test_an_as_of_at_the_edge_of_time_is_422_not_500(apis, as_of: str) -> None:
    answer = apis["ledger"].call("GET", f"/v1/ledger/trial-balance?as_of={as_of}", **OPS)
    assert answer.status_code == 422


def test_nul_in_owner_is_422_not_500(apis, db) -> None:
    before = snapshot(db)
    body = {"id": str(uuid.uuid4()), "currency": "EUR", "owner": "a\x00b"}
    assert apis["accounts"].call("POST", "/v1/accounts", body, **OPS).status_code == 422
    assert snapshot(db) == before


def test_nul_in_a_token_subject_is_401_not_500(apis) -> None:
    answer = apis["transfers"].call("GET", "/v1/transfers", sub="a\x00b")
    assert answer.status_code == 401


@pytest.mark.parametrize("value", ["a\x00b", "\ud800"], ids=["nul", "surrogate"])
@pytest.mark.parametrize("attribute", ["source", "id"])
def test_nul_in_an_event_source_or_id_is_400_not_500(apis, db, attribute: str, value) -> None:
    body = structured(
        "dev.holdfast.transfer.cancel.v1", {"id": str(uuid.uuid4())}, **{attribute: value}
    )
    before = snapshot(db)
    assert apis["transfers"].client.post("/", headers=CE_JSON, data=body).status_code == 400
    assert snapshot(db) == before


def test_a_reserve_event_debiting_and_crediting_one_account_is_400(apis, db) -> None:
    account = str(uuid.uuid4())
    data = {
        "id": str(uuid.uuid4()),
        "currency": "EUR",
        "debit_account_id": account,
        "credit_account_id": account,
        "amount": 5,
    }
    before = snapshot(db)
    body = structured("dev.holdfast.transfer.reserve.v1", data)
    assert apis["transfers"].client.post("/", headers=CE_JSON, data=body).status_code == 400
    assert snapshot(db) == before
