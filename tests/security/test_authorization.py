"""Who may do what: every endpoint under every scope, the auditor's read-only scope, and
the owner rule (another customer's accounts and transfers are 404, never data)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from holdfast.entrypoints import openapi
from holdfast.services import ledger as ledger_service
from tests.conftest import snapshot
from tests.fuzz.service import EVERY_SCOPE
from tests.security.conftest import CUSTOMER, Http, World, new_id

Request = tuple[str, str, Any]  # method, path, body


def requests(world: World) -> dict[tuple[str, str], Callable[[], Request]]:
    """One real request per route (rule, method), aimed at alice's things."""
    account = f"/v1/accounts/{world.alice}"
    transfer = f"/v1/transfers/{world.alice_held}"
    reserve = {
        "id": "",
        "currency": "EUR",
        "debit_account_id": world.alice,
        "credit_account_id": world.bank,
        "amount": 1,
    }
    return {
        ("/v1/accounts", "POST"): lambda: (
            "POST",
            "/v1/accounts",
            {"id": new_id(), "currency": "EUR", "owner": "alice"},
        ),
        ("/v1/accounts/<uuid:account_id>", "GET"): lambda: ("GET", account, None),
        ("/v1/accounts/<uuid:account_id>/freeze", "POST"): lambda: (
            "POST",
            f"{account}/freeze",
            None,
        ),
        ("/v1/accounts/<uuid:account_id>/unfreeze", "POST"): lambda: (
            "POST",
            f"{account}/unfreeze",
            None,
        ),
        ("/v1/accounts/<uuid:account_id>/close", "POST"): lambda: (
            "POST",
            f"{account}/close",
            None,
        ),
        ("/v1/transfers", "POST"): lambda: ("POST", "/v1/transfers", {**reserve, "id": new_id()}),
        ("/v1/transfers", "GET"): lambda: ("GET", "/v1/transfers", None),
        ("/v1/transfers:batch", "POST"): lambda: (
            "POST",
            "/v1/transfers:batch",
            {"operations": [{"op": "reserve", **reserve, "id": new_id()}]},
        ),
        ("/v1/transfers/<uuid:transfer_id>", "GET"): lambda: ("GET", transfer, None),
        ("/v1/transfers/<uuid:transfer_id>/confirm", "POST"): lambda: (
            "POST",
            f"{transfer}/confirm",
            None,
        ),
        ("/v1/transfers/<uuid:transfer_id>/cancel", "POST"): lambda: (
            "POST",
            f"{transfer}/cancel",
            None,
        ),
        ("/v1/ledger/entries", "GET"): lambda: ("GET", "/v1/ledger/entries", None),
        ("/v1/ledger/accounts/<uuid:account_id>/balance", "GET"): lambda: (
            "GET",
            f"/v1/ledger/accounts/{world.alice}/balance",
            None,
        ),
        ("/v1/ledger/trial-balance", "GET"): lambda: ("GET", "/v1/ledger/trial-balance", None),
        ("/v1/ledger/checkpoints", "GET"): lambda: ("GET", "/v1/ledger/checkpoints", None),
        ("/v1/ledger/checkpoints/latest", "GET"): lambda: (
            "GET",
            "/v1/ledger/checkpoints/latest",
            None,
        ),
        ("/v1/ledger/checkpoints/<int(max=9223372036854775807):number>", "GET"): lambda: (
            "GET",
            "/v1/ledger/checkpoints/1",
            None,
        ),
        ("/v1/ledger/public-key", "GET"): lambda: ("GET", "/v1/ledger/public-key", None),
        ("/v1/ledger/export", "GET"): lambda: ("GET", "/v1/ledger/export", None),
    }


SCOPES = list(openapi.SCOPES)
TOKENS = {"none": "", **{scope: scope for scope in SCOPES}, "all": EVERY_SCOPE}


def seal(runtime: Any) -> None:
    ledger_service.seal_pending(runtime.db, runtime.ledger_signer)


def test_every_endpoint_under_every_scope(http: Http, world: World, runtime, db) -> None:
    """A token may call a route iff it holds the route's scope; otherwise 403
    insufficient_scope and nothing changes. Operator alone grants no route."""
    seal(runtime)
    table = requests(world)
    assert set(table) == set(openapi.routes()), "a route has no request in this matrix"
    matrix: dict[str, dict[str, int]] = {}
    for (rule, method), scope in sorted(openapi.routes().items()):
        row = matrix.setdefault(f"{method} {rule}", {})
        for token, granted in TOKENS.items():
            sent_method, path, body = table[(rule, method)]()
            before = snapshot(db) if scope not in granted.split() else None
            answer = http.call(sent_method, path, body, scope=granted)
            row[token] = answer.status_code
            if before is None:
                assert answer.status_code != 401, (rule, method, token)
                problem = answer.get_json(silent=True) or {}
                assert problem.get("code") != "insufficient_scope", (rule, method, token)
            else:
                assert answer.status_code == 403, (rule, method, token, answer.data)
                assert answer.get_json()["code"] == "insufficient_scope"
                assert scope in answer.get_json()["detail"]
                assert snapshot(db) == before, (rule, method, token)
    print("\nstatus by route (rows) and token scope (columns):")
    short = {t: "".join(w[0] for w in re.split(r"[:]", t)) if ":" in t else t for t in TOKENS}
    print(f"{'':52}" + " ".join(f"{short[t]:>5}" for t in TOKENS) + "   (ar = accounts:read ...)")
    for route, cells in matrix.items():
        print(f"{route[:52]:52}" + " ".join(f"{cells[t]:>5}" for t in TOKENS))


def test_the_auditor_reads_the_whole_ledger_and_can_write_nothing(
    http: Http, world: World, runtime, db
) -> None:
    seal(runtime)
    auditor = {"sub": "auditor", "scope": "ledger:read"}
    for (rule, method), make in requests(world).items():
        sent_method, path, body = make()
        before = snapshot(db)
        answer = http.call(sent_method, path, body, **auditor)
        if rule.startswith("/v1/ledger"):
            assert answer.status_code == 200, (rule, answer.data[:200])
        else:
            assert answer.status_code == 403, (rule, method)
            assert answer.get_json()["code"] == "insufficient_scope"
        assert snapshot(db) == before
    # The auditor sees every customer's entries, not only its own (it owns none).
    entries = http.call("GET", "/v1/ledger/entries", **auditor).get_json()["entries"]
    assert {world.alice, world.bob} <= {entry["account_id"] for entry in entries}


# -- the owner rule ---------------------------------------------------------------------------


def bob(http: Http, method: str, path: str, body: Any = None) -> Any:
    return http.call(method, path, body, sub="bob", scope=CUSTOMER)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/accounts/{alice}"),
        ("POST", "/v1/accounts/{alice}/freeze"),
        ("POST", "/v1/accounts/{alice}/unfreeze"),
        ("POST", "/v1/accounts/{alice}/close"),
        ("GET", "/v1/transfers/{alice_held}"),
        ("GET", "/v1/transfers/{alice_paid}"),
        ("POST", "/v1/transfers/{alice_held}/confirm"),
        ("POST", "/v1/transfers/{alice_held}/cancel"),
    ],
)
def test_another_customers_account_or_transfer_is_404_with_no_data(
    http: Http, world: World, db, method: str, path: str
) -> None:
    before = snapshot(db)
    answer = bob(http, method, path.format(**vars(world)))
    assert answer.status_code == 404
    body = answer.get_json()
    assert set(body) == {"type", "title", "status", "detail", "code"}
    assert "alice" not in answer.get_data(as_text=True).lower()
    assert snapshot(db) == before


def test_a_customer_cannot_debit_another_customers_account(http: Http, world: World, db) -> None:
    before = snapshot(db)
    reserve = {
        "id": new_id(),
        "currency": "EUR",
        "debit_account_id": world.alice,
        "credit_account_id": world.bob,
        "amount": 1,
    }
    answer = bob(http, "POST", "/v1/transfers", reserve)
    assert answer.status_code == 404 and answer.get_json()["code"] == "account_not_found"
    batch = bob(http, "POST", "/v1/transfers:batch", {"operations": [{"op": "reserve", **reserve}]})
    assert batch.status_code == 200
    assert batch.get_json()["results"][0]["code"] == "account_not_found"
    opened = bob(
        http, "POST", "/v1/accounts", {"id": new_id(), "currency": "EUR", "owner": "alice"}
    )
    assert opened.status_code == 403 and opened.get_json()["code"] == "forbidden"
    assert snapshot(db) == before


def test_lists_show_a_customer_only_their_own(http: Http, world: World) -> None:
    mine = bob(http, "GET", "/v1/transfers").get_json()["transfers"]
    assert mine and world.alice_held not in {t["id"] for t in mine}
    theirs = bob(http, "GET", f"/v1/transfers?account_id={world.alice}")
    unknown = bob(http, "GET", f"/v1/transfers?account_id={new_id()}")
    assert theirs.status_code == unknown.status_code == 200
    assert theirs.get_json() == unknown.get_json() == {"transfers": [], "next": None}


def test_paying_another_customer_is_allowed_and_both_see_the_transfer(
    http: Http, world: World
) -> None:
    reserve = {
        "id": new_id(),
        "currency": "EUR",
        "debit_account_id": world.bob,
        "credit_account_id": world.alice,
        "amount": 7,
    }
    assert bob(http, "POST", "/v1/transfers", reserve).status_code == 201
    seen = http.call("GET", f"/v1/transfers/{reserve['id']}", sub="alice")
    assert seen.status_code == 200 and seen.get_json()["amount"] == 7
    # ...but only the debtor acts on it: alice may not confirm bob's payment to her.
    assert http.call("POST", f"/v1/transfers/{reserve['id']}/confirm").status_code == 404


def test_an_operator_acts_on_every_customers_things(http: Http, world: World) -> None:
    operator = {"sub": "back-office", "scope": CUSTOMER + " operator"}
    assert http.call("GET", f"/v1/accounts/{world.alice}", **operator).status_code == 200
    assert http.call("GET", f"/v1/transfers/{world.bob_held}", **operator).status_code == 200
    confirmed = http.call("POST", f"/v1/transfers/{world.alice_held}/confirm", **operator)
    assert confirmed.status_code == 200 and confirmed.get_json()["state"] == "confirmed"
    assert http.call("POST", f"/v1/accounts/{world.bob}/freeze", **operator).status_code == 200
    assert http.call("POST", f"/v1/accounts/{world.bob}/unfreeze", **operator).status_code == 200
    # Lifting a freeze takes operator even on your own account.
    assert http.call("POST", f"/v1/accounts/{world.alice}/freeze").status_code == 200
    refused = http.call("POST", f"/v1/accounts/{world.alice}/unfreeze")
    assert refused.status_code == 403 and refused.get_json()["code"] == "forbidden"


# -- no existence leak ------------------------------------------------------------------------


def shape(answer: Any, hidden_id: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body with the id asked for replaced by a placeholder."""
    body = answer.get_data().replace(hidden_id.encode(), b"<id>")
    headers = sorted((k, v) for k, v in answer.headers.items() if k != "Content-Length")
    return answer.status_code, headers, body


@pytest.mark.parametrize(
    ("method", "template", "field"),
    [
        ("GET", "/v1/accounts/{}", "alice"),
        ("POST", "/v1/accounts/{}/freeze", "alice"),
        ("POST", "/v1/accounts/{}/unfreeze", "alice"),
        ("POST", "/v1/accounts/{}/close", "alice"),
        ("GET", "/v1/transfers/{}", "alice_held"),
        ("POST", "/v1/transfers/{}/confirm", "alice_held"),
    ],
)
def test_the_404_for_another_customers_id_is_the_404_for_a_random_id(
    http: Http, world: World, method: str, template: str, field: str
) -> None:
    theirs = getattr(world, field)
    random_id = new_id()
    answer_theirs = bob(http, method, template.format(theirs))
    answer_random = bob(http, method, template.format(random_id))
    assert answer_theirs.status_code == 404
    assert shape(answer_theirs, theirs) == shape(answer_random, random_id)


def test_a_debit_of_another_customers_account_reads_like_an_unknown_account(
    http: Http, world: World
) -> None:
    def reserve(debit: str) -> Any:
        body = {
            "id": new_id(),
            "currency": "EUR",
            "debit_account_id": debit,
            "credit_account_id": world.bob,
            "amount": 1,
        }
        return bob(http, "POST", "/v1/transfers", body)

    unknown = new_id()
    assert shape(reserve(world.alice), world.alice) == shape(reserve(unknown), unknown)


def test_cancel_reveals_that_a_transfer_id_is_taken(http: Http, world: World, db) -> None:
    """Known, contract-imposed oracle (SECURITY.md, known gaps): cancel of an unknown id is
    200 and fences it, so cancel of another customer's transfer (404) tells bob the id is
    taken. He learns no data and changes nothing; ids are random UUIDs, so he can only
    probe ids he was given. Pinned so that a change of either answer is deliberate."""
    before = snapshot(db)
    taken = bob(http, "POST", f"/v1/transfers/{world.alice_held}/cancel")
    assert taken.status_code == 404 and set(taken.get_json()) == {
        "type",
        "title",
        "status",
        "detail",
        "code",
    }
    assert snapshot(db) == before
    fresh = bob(http, "POST", f"/v1/transfers/{new_id()}/cancel")
    assert fresh.status_code == 200 and fresh.get_json()["state"] == "cancelled"
    assert re.fullmatch(r"transfer \S+ not found", taken.get_json()["detail"])
