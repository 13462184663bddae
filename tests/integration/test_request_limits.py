"""Limits at the edge: per-token request rate, body size, and page size."""

from __future__ import annotations

import dataclasses
import uuid

from holdfast.entrypoints import runtime as runtime_module
from tests.conftest import Api, function_client, snapshot


def test_a_token_over_its_rate_gets_429_with_retry_after(runtime, issuer, db) -> None:
    # A refill slow enough (one request per 100 s) that a slow machine cannot earn another.
    limited = dataclasses.replace(runtime.settings, rate_limit_per_s=0.01, rate_limit_burst=3.0)
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


def test_operator_tokens_have_a_limit_of_their_own(runtime, issuer) -> None:
    """A bank's back office (the `operator` scope) is not held to a customer's rate."""
    limited = dataclasses.replace(
        runtime.settings,
        rate_limit_per_s=0.01,
        rate_limit_burst=2.0,
        operator_rate_limit_per_s=0.01,
        operator_rate_limit_burst=5.0,
    )
    runtime_module.install(dataclasses.replace(runtime, settings=limited))
    api = Api(function_client("accounts"), issuer)

    def statuses(sub: str, scope: str, n: int) -> list[int]:
        path = f"/v1/accounts/{uuid.uuid4()}"
        return [api.call("GET", path, sub=sub, scope=scope).status_code for _ in range(n)]

    assert statuses("alice", "accounts:read", 3) == [404, 404, 429]
    assert statuses("ops", "accounts:read operator", 6) == [404] * 5 + [429]
    unlimited = dataclasses.replace(limited, operator_rate_limit_per_s=0.0)
    runtime_module.install(dataclasses.replace(runtime, settings=unlimited))
    assert statuses("ops", "accounts:read operator", 20) == [404] * 20
    assert statuses("alice", "accounts:read", 3) == [404, 404, 429]
