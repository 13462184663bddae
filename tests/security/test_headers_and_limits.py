"""Security headers on every answer (successes, errors, 404 and 405 included) and the
per-token rate limit (429 with Retry-After, per subject, nothing changed)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

import pytest
from werkzeug.test import Client

from holdfast import limits
from holdfast.entrypoints import runtime as runtime_module
from holdfast.entrypoints.web import SECURITY_HEADERS
from tests.conftest import snapshot
from tests.fuzz.service import EVERY_SCOPE, function_app
from tests.security.conftest import Http, World, new_id


def missing_headers(answer: Any) -> list[str]:
    return [h for h, v in SECURITY_HEADERS.items() if answer.headers.get(h) != v]


def test_every_kind_of_answer_carries_the_security_headers(http: Http, world: World) -> None:
    account = f"/v1/accounts/{world.alice}"
    too_big = b"{" + b" " * limits.request_body_bytes_max + b"}"
    answers = {
        200: http.call("GET", account),
        201: http.call(
            "POST", "/v1/accounts", {"id": new_id(), "currency": "EUR", "owner": "alice"}
        ),
        400: http.client.post("/v1/accounts", data=b"{", headers=http.bearer("alice", EVERY_SCOPE)),
        401: http.client.get(account),
        403: http.call("GET", account, scope="ledger:read"),
        404: http.call("GET", f"/v1/accounts/{new_id()}"),
        405: http.call("DELETE", account),
        409: http.call("POST", f"{account}/close"),
        413: http.client.post("/v1/accounts", data=too_big, headers=http.bearer("a", EVERY_SCOPE)),
        422: http.call("POST", "/v1/accounts", {"id": "x"}),
    }
    answers_by_name = {
        "no route": http.call("GET", "/v1/accounts/not-a-uuid"),
        "export": http.call("GET", "/v1/ledger/export", scope="ledger:read"),
        "healthz": http.client.get("/healthz"),
        "readyz": http.client.get("/readyz"),
        "event refused": http.client.post("/", data=b"{", headers={"ce-specversion": "1.0"}),
    }
    for status, answer in answers.items():
        assert answer.status_code == status, (status, answer.data[:200])
    assert answers_by_name["no route"].status_code == 404
    for name, answer in {**answers, **answers_by_name}.items():
        assert missing_headers(answer) == [], name


def test_internal_answers_carry_the_security_headers_too(http: Http, world: World) -> None:
    tick = {
        "ce-specversion": "1.0",
        "ce-type": "dev.knative.sources.ping",
        "ce-source": "/tests",
        "ce-id": new_id(),
        "content-type": "application/json",
    }
    answers = [
        http.client.get("/metrics"),
        Client(function_app("transfers")).post("/", data=b"{}", headers=tick),
    ]
    for answer in answers:
        assert answer.status_code == 200
        assert missing_headers(answer) == []


def test_a_405_names_the_allowed_methods(http: Http, world: World) -> None:
    answer = http.call("DELETE", f"/v1/accounts/{world.alice}")
    assert answer.status_code == 405
    assert set(answer.headers.get("Allow", "").split(", ")) == {"GET", "HEAD"}  # HEAD rides on GET


# -- per-token rate limits --------------------------------------------------------------------


@pytest.fixture
def limited(http: Http, runtime) -> Http:
    """One request a second per subject, bursts of three."""
    settings = dataclasses.replace(runtime.settings, rate_limit_per_s=1.0, rate_limit_burst=3.0)
    runtime_module.install(dataclasses.replace(runtime, settings=settings))
    return http


def test_a_token_over_its_rate_is_429_and_changes_nothing(limited: Http, db) -> None:
    path = f"/v1/accounts/{uuid.uuid4()}"
    assert [limited.call("GET", path).status_code for _ in range(3)] == [404, 404, 404]
    before = snapshot(db)
    body = {"id": new_id(), "currency": "EUR", "owner": "alice"}
    refused = limited.call("POST", "/v1/accounts", body)
    assert refused.status_code == 429
    assert refused.get_json()["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.get_json()["retry_after_s"] > 0
    assert missing_headers(refused) == []
    assert snapshot(db) == before
    # The limit is per subject: bob is not slowed down by alice, whatever the scope.
    assert limited.call("GET", path, sub="bob").status_code == 404
    # ...and per subject, not per token: a fresh token for alice is still limited.
    assert limited.call("GET", path).status_code == 429


def test_an_invalid_token_is_401_before_the_rate_limit_counts(limited: Http) -> None:
    """A flood of bad tokens costs the attacker a 401 each and no one else's budget."""
    for _ in range(10):
        assert limited.client.get(f"/v1/accounts/{uuid.uuid4()}").status_code == 401
    assert limited.call("GET", f"/v1/accounts/{uuid.uuid4()}").status_code == 404


def test_the_export_counts_against_the_rate_limit(limited: Http) -> None:
    auditor = {"sub": "auditor", "scope": "ledger:read"}
    statuses = [limited.call("GET", "/v1/ledger/export", **auditor).status_code for _ in range(5)]
    assert statuses[-1] == 429, statuses


def test_events_over_the_size_limit_never_reach_the_parser(http: Http, db) -> None:
    """The declared length is checked first: a 4x oversized structured event is refused
    as 400 (Knative then dead-letters it instead of retrying), and nothing changes."""
    envelope = {"specversion": "1.0", "type": "x", "source": "/t", "id": "1"}
    envelope["data"] = {"pad": "x" * (4 * limits.event_bytes_max)}
    before = snapshot(db)
    answer = http.client.post(
        "/",
        data=json.dumps(envelope),
        headers={"content-type": "application/cloudevents+json"},
    )
    assert answer.status_code == 400 and "64 KiB" in answer.get_json()["detail"]
    assert snapshot(db) == before
