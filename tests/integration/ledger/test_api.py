"""The auditor's HTTP API: entries in ledger order, point-in-time balances, the trial balance,
checkpoints, the public key, and the ping that seals."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, timedelta, timezone
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from holdfast.adapters.signing import Ed25519Keyring, parse_public_pem
from holdfast.domain import ledger
from holdfast.domain.accounts import NormalBalance
from holdfast.services import ledger as service
from tests.integration.ledger import support

AUDITOR = {"sub": "auditor", "scope": "ledger:read"}


def clock(db):
    with db.engine.connect() as c:
        return c.execute(sa.text("SELECT clock_timestamp()")).scalar_one()


def test_entries_come_in_ledger_order_with_filters(db, signer, ledger_api):
    a, b, c = support.open_accounts(db, 3)
    first = support.reserve([(a, b, 10)])
    second = support.reserve([(b, c, 4), (a, c, 1)])
    support.pay(db, [first, second])
    support.seal_all(db, signer)

    everything = ledger_api.call("GET", "/v1/ledger/entries", **AUDITOR)
    assert everything.status_code == 200
    body = everything.json
    assert body["next"] is None
    assert [e["seq"] for e in body["entries"]] == [1, 2, 3, 4, 5, 6]
    assert set(body["entries"][0]) == {
        "seq",
        "transfer_id",
        "leg",
        "account_id",
        "direction",
        "amount",
        "currency",
        "posted_at",
    }
    of_a = ledger_api.call("GET", f"/v1/ledger/entries?account_id={a}", **AUDITOR).json
    # Same transaction, same posted_at: the two transfers are in transfer id order.
    by_transfer = sorted([(str(first.id), 10), (str(second.id), 1)])
    assert [(e["transfer_id"], e["amount"]) for e in of_a["entries"]] == by_transfer
    assert {e["direction"] for e in of_a["entries"]} == {"debit"}
    of_second = ledger_api.call(
        "GET", f"/v1/ledger/entries?transfer_id={second.id}&account_id={c}", **AUDITOR
    ).json
    assert [(e["leg"], e["direction"], e["amount"]) for e in of_second["entries"]] == [
        (0, "credit", 4),
        (1, "credit", 1),
    ]
    page = ledger_api.call("GET", "/v1/ledger/entries?limit=4&after=1", **AUDITOR).json
    assert [e["seq"] for e in page["entries"]] == [2, 3, 4, 5]
    assert page["next"] == "5"


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=1001", "after=-1", "after=x", "account_id=nope", "transfer_id=1"]
)
def test_bad_entry_queries_are_422(ledger_api, query):
    response = ledger_api.call("GET", f"/v1/ledger/entries?{query}", **AUDITOR)
    assert response.status_code == 422, response.json
    assert response.json["code"] == "validation_error"


def test_pages_lose_and_repeat_nothing_while_entries_arrive(db, signer, ledger_api):
    accounts = support.open_accounts(db, 5)
    support.random_payments(db, accounts, 10, seed=1)
    support.seal_all(db, signer)
    seen: list[int] = []
    after = "0"
    for round_ in range(30):
        page = ledger_api.call("GET", f"/v1/ledger/entries?limit=7&after={after}", **AUDITOR).json
        seen.extend(e["seq"] for e in page["entries"])
        if page["entries"]:
            after = str(page["entries"][-1]["seq"])
        if round_ < 8:  # new entries arrive, and are sealed, between pages
            support.random_payments(db, accounts, 3, seed=50 + round_)
            if round_ % 2:
                support.seal_all(db, signer)
    support.seal_all(db, signer)
    while True:
        page = ledger_api.call("GET", f"/v1/ledger/entries?limit=7&after={after}", **AUDITOR).json
        if not page["entries"]:
            break
        seen.extend(e["seq"] for e in page["entries"])
        after = str(page["entries"][-1]["seq"])
    with db.engine.connect() as c:
        total = c.execute(sa.text("SELECT count(*) FROM ledger_entries")).scalar_one()
    assert seen == list(range(1, total + 1))


def test_point_in_time_balances_match_a_recomputation(db, ledger_api):
    """Balances at marks between rounds of payments equal what a model of the payments says."""
    credit_normal = support.open_accounts(db, 4)
    debit_normal = support.open_accounts(db, 2, normal_balance=NormalBalance.DEBIT)
    accounts = credit_normal + debit_normal
    model = {a: {"debit": 0, "credit": 0} for a in accounts}
    marks = [(clock(db), {a: dict(v) for a, v in model.items()})]
    rng = random.Random(3)
    for _ in range(6):
        commands = []
        for _ in range(15):
            legs = []
            for _ in range(rng.choice((1, 2))):
                debit, credit = rng.sample(accounts, 2)
                amount = rng.randint(1, 5_000)
                legs.append((debit, credit, amount))
                model[debit]["debit"] += amount
                model[credit]["credit"] += amount
            commands.append(support.reserve(legs))
        for start in range(0, len(commands), 4):
            support.pay(db, commands[start : start + 4])
        marks.append((clock(db), {a: dict(v) for a, v in model.items()}))
    for at, expected in marks:
        for account in accounts:
            response = ledger_api.call(
                "GET",
                f"/v1/ledger/accounts/{account}/balance?as_of={quote(at.isoformat())}",
                **AUDITOR,
            )
            assert response.status_code == 200, response.json
            body = response.json
            sides = expected[account]
            sign = 1 if account in credit_normal else -1
            assert body["debits_posted"] == sides["debit"]
            assert body["credits_posted"] == sides["credit"]
            assert body["balance"]["posted"] == sign * (sides["credit"] - sides["debit"])
    # Now (no as_of) agrees with the account's own counters.
    for account in accounts:
        now = ledger_api.call("GET", f"/v1/ledger/accounts/{account}/balance", **AUDITOR).json
        with db.engine.connect() as c:
            row = c.execute(
                sa.text("SELECT debits_posted, credits_posted FROM accounts WHERE id = :id"),
                {"id": account},
            ).one()
        assert (now["debits_posted"], now["credits_posted"]) == tuple(row)


def test_an_account_that_did_not_exist_then_is_404(db, ledger_api):
    before = clock(db)
    (account,) = support.open_accounts(db, 1)
    response = ledger_api.call(
        "GET", f"/v1/ledger/accounts/{account}/balance?as_of={quote(before.isoformat())}", **AUDITOR
    )
    assert response.status_code == 404
    assert response.json["code"] == "account_not_found"
    unknown = ledger_api.call("GET", f"/v1/ledger/accounts/{uuid.uuid4()}/balance", **AUDITOR)
    assert unknown.status_code == 404
    after = ledger_api.call(
        "GET",
        f"/v1/ledger/accounts/{account}/balance?as_of={quote(clock(db).isoformat())}",
        **AUDITOR,
    )
    assert after.status_code == 200
    assert after.json["balance"] == {"posted": 0}


@pytest.mark.parametrize("as_of", ["yesterday", "2026-01-01T00:00:00", "2026-13-01T00:00:00Z"])
def test_bad_as_of_is_422(db, ledger_api, as_of):
    (account,) = support.open_accounts(db, 1)
    response = ledger_api.call(
        "GET", f"/v1/ledger/accounts/{account}/balance?as_of={as_of}", **AUDITOR
    )
    assert response.status_code == 422


def test_trial_balance_balances_per_currency_at_any_time(db, ledger_api):
    start = clock(db)
    eur = support.open_accounts(db, 3)
    usd = support.open_accounts(db, 2, currency="USD")
    support.random_payments(db, eur, 12)
    support.pay(db, [support.reserve([(usd[0], usd[1], 250)], currency="USD")])
    empty = ledger_api.call(
        "GET", f"/v1/ledger/trial-balance?as_of={quote(start.isoformat())}", **AUDITOR
    ).json
    assert empty["currencies"] == [] and empty["balanced"] is True
    body = ledger_api.call("GET", "/v1/ledger/trial-balance", **AUDITOR).json
    assert [c["currency"] for c in body["currencies"]] == ["EUR", "USD"]
    assert body["balanced"] is True
    assert body["currencies"][1] == {
        "currency": "USD",
        "debits": 250,
        "credits": 250,
        "balanced": True,
    }
    with db.engine.connect() as c:
        total = c.execute(
            sa.text(
                "SELECT sum(amount) FROM ledger_entries WHERE currency = 'EUR' AND direction = 'debit'"
            )
        ).scalar_one()
    assert body["currencies"][0]["debits"] == body["currencies"][0]["credits"] == total


def test_checkpoints_latest_by_number_and_the_public_key(db, signer, ledger_api):
    latest = ledger_api.call("GET", "/v1/ledger/checkpoints/latest", **AUDITOR)
    assert latest.status_code == 404
    a, b = support.open_accounts(db, 2)
    for amount in (1, 2, 3):
        support.pay(db, [support.reserve([(a, b, amount)])])
        service.seal_pending(db, signer)
    listed = ledger_api.call("GET", "/v1/ledger/checkpoints?limit=2", **AUDITOR).json
    assert [c["number"] for c in listed["checkpoints"]] == [1, 2]
    assert listed["next"] == "2"
    rest = ledger_api.call("GET", "/v1/ledger/checkpoints?after=2", **AUDITOR).json
    assert [c["number"] for c in rest["checkpoints"]] == [3] and rest["next"] is None
    latest = ledger_api.call("GET", "/v1/ledger/checkpoints/latest", **AUDITOR).json
    assert latest == rest["checkpoints"][0]
    assert (
        ledger_api.call("GET", "/v1/ledger/checkpoints/2", **AUDITOR).json
        == (listed["checkpoints"][1])
    )
    assert ledger_api.call("GET", "/v1/ledger/checkpoints/9", **AUDITOR).status_code == 404
    key = ledger_api.call("GET", "/v1/ledger/public-key", **AUDITOR).json
    assert key["key_id"] == latest["key_id"] == signer.key_id
    assert key["algorithm"] == "Ed25519"
    assert [k["key_id"] for k in key["keys"]] == [signer.key_id]
    keyring = Ed25519Keyring([parse_public_pem(key["public_key"])])
    assert keyring.verify(
        latest["key_id"], ledger.signing_message(latest), bytes.fromhex(latest["signature"])
    )


def test_a_ping_event_seals(db, ledger_api):
    a, b = support.open_accounts(db, 2)
    support.pay(db, [support.reserve([(a, b, 5)])])
    response = ledger_api.client.post(
        "/",
        json={"task": "seal"},
        headers={
            "ce-specversion": "1.0",
            "ce-type": "dev.knative.sources.ping",
            "ce-source": "/test/ping",
            "ce-id": "tick-1",
        },
    )
    assert response.status_code == 200
    latest = ledger_api.call("GET", "/v1/ledger/checkpoints/latest", **AUDITOR).json
    assert latest["number"] == 1 and latest["entry_count"] == 2


def test_time_in_other_zones_is_the_same_instant(db, ledger_api):
    (account,) = support.open_accounts(db, 1)
    later = clock(db) + timedelta(hours=1)
    shifted = later.astimezone(timezone(timedelta(hours=2))).isoformat()
    response = ledger_api.client.get(
        f"/v1/ledger/accounts/{account}/balance",
        query_string={"as_of": shifted},
        headers=ledger_api.token(**AUDITOR),
    )
    assert response.status_code == 200
    expected = later.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    assert response.json["as_of"] == expected
