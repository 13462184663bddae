"""Limits at the edge: per-token request rate, body size, and page size."""

from __future__ import annotations

import dataclasses
import uuid

from holdfast.entrypoints import runtime as runtime_module
from tests.conftest import Api, function_client, snapshot


def test_a_token_over_its_rate_gets_429_with_retry_after(runtime, issuer, db) -> None:
    limited = dataclasses.replace(runtime.settings, rate_limit_per_s=1.0, rate_limit_burst=3.0)
    runtime_module.install(dataclasses.replace(runtime, settings=limited))
    api = Api(function_client("accounts"), issuer)
    statuses = [api.call("GET", f"/v1/accounts/{uuid.uuid4()}").status_code for _ in range(4)]
    assert statuses == [404, 404, 404, 429]
    refused = api.call("GET", f"/v1/accounts/{uuid.uuid4()}")
    assert refused.json["code"] == "rate_limited" and int(refused.headers["Retry-After"]) >= 1
    before = snapshot(db)
    body = {"id": str(uuid.uuid4()), "currency": "EUR", "owner": "alice"}
    assert api.call("POST", "/v1/accounts", body).status_code == 429
    assert snapshot(db) == before
    # Another token is not slowed down by alice's.
    assert api.call("GET", f"/v1/accounts/{uuid.uuid4()}", sub="bob").status_code == 404
