"""`ledger:read` is the auditor's scope: it reads the whole ledger and can change nothing."""

from __future__ import annotations

import uuid

from tests.conftest import snapshot
from tests.integration.ledger import support

ACCOUNT = str(uuid.uuid4())
TRANSFER = str(uuid.uuid4())
LEDGER_READS = [
    "/v1/ledger/entries",
    "/v1/ledger/entries/1/proof",
    f"/v1/ledger/accounts/{ACCOUNT}/balance",
    "/v1/ledger/trial-balance",
    "/v1/ledger/checkpoints",
    "/v1/ledger/checkpoints/latest",
    "/v1/ledger/checkpoints/1",
    "/v1/ledger/public-key",
    "/v1/ledger/export",
]
WRITES = [
    ("accounts_api", "/v1/accounts", {"id": ACCOUNT, "currency": "EUR", "owner": "auditor"}),
    ("accounts_api", f"/v1/accounts/{ACCOUNT}/freeze", None),
    ("accounts_api", f"/v1/accounts/{ACCOUNT}/unfreeze", None),
    ("accounts_api", f"/v1/accounts/{ACCOUNT}/close", None),
    (
        "transfers_api",
        "/v1/transfers",
        {
            "id": TRANSFER,
            "debit_account_id": ACCOUNT,
            "credit_account_id": str(uuid.uuid4()),
            "amount": 1,
            "currency": "EUR",
        },
    ),
    ("transfers_api", f"/v1/transfers/{TRANSFER}/confirm", None),
    ("transfers_api", f"/v1/transfers/{TRANSFER}/cancel", None),
    ("transfers_api", "/v1/transfers:batch", {"operations": [{"op": "cancel", "id": TRANSFER}]}),
]


def test_ledger_reads_need_the_ledger_read_scope(ledger_api):
    everything_else = "accounts:read accounts:write transfers:read transfers:write operator"
    for path in LEDGER_READS:
        refused = ledger_api.call("GET", path, sub="ops", scope=everything_else)
        assert refused.status_code == 403, path
        assert refused.json["code"] == "insufficient_scope"
        assert ledger_api.client.get(path).status_code == 401, path
        allowed = ledger_api.call("GET", path, sub="auditor", scope="ledger:read")
        assert allowed.status_code in (200, 404), path  # 404: no checkpoint or account yet


def test_the_ledger_has_no_write_method(ledger_api):
    for path in LEDGER_READS:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            response = ledger_api.call(method, path, {}, sub="auditor", scope="ledger:read")
            assert response.status_code == 405, (method, path)


def test_an_auditor_cannot_call_any_write_endpoint(request, db):
    (existing,) = support.open_accounts(db, 1)
    before = snapshot(db)
    for api, path, body in WRITES:
        client = request.getfixturevalue(api)
        response = client.call(
            "POST", path.replace(ACCOUNT, str(existing)), body, sub="auditor", scope="ledger:read"
        )
        assert response.status_code == 403, (path, response.json)
        assert response.json["code"] == "insufficient_scope"
    assert snapshot(db) == before
