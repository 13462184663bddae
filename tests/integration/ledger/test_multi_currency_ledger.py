"""A ledger holding multi-currency transfers: each leg's entries in that leg's currency, the
trial balance per currency, and both auditor tools (`audit verify` offline, `audit check`
against the database) accepting legs of one transfer in different currencies while still
checking each leg's double entry."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import pytest
from click.testing import CliRunner

from holdfast.domain.transfers import Leg, ReserveCommand
from holdfast.entrypoints.cli import main
from holdfast.services import ledger as service
from tests.integration.ledger import support

AUDITOR = {"sub": "auditor", "scope": "ledger:read"}


def fx_payment(eur: tuple[uuid.UUID, uuid.UUID, int], usd: tuple[uuid.UUID, uuid.UUID, int]):
    transfer_id = uuid.uuid4()
    return ReserveCommand(
        id=transfer_id,
        currency=None,
        legs=(Leg(*eur, "EUR"), Leg(*usd, "USD")),
        timeout_s=300,
        immediate=True,
        metadata={},
        request={"id": str(transfer_id)},
    )


@pytest.fixture
def fx_ledger(db, signer) -> dict[str, Any]:
    """Single-currency payments and FX payments in both directions, sealed in 3+ checkpoints."""
    eur = support.open_accounts(db, 3)
    usd = support.open_accounts(db, 3, currency="USD")
    support.random_payments(db, eur, 6, seed=3, per_batch=3)
    payments = [
        fx_payment(
            (eur[i % 3], eur[(i + 1) % 3], 1_000 + i), (usd[i % 3], usd[(i + 2) % 3], 1_080 + i)
        )
        for i in range(6)
    ]
    for start in range(0, len(payments), 2):
        support.pay(db, payments[start : start + 2])
    while service.seal_once(db, signer, batch=6) is not None:
        pass
    return {"payments": payments, "eur": eur, "usd": usd}


def test_each_leg_is_posted_in_its_own_currency(db, fx_ledger, ledger_api):
    payment = fx_ledger["payments"][0]
    response = ledger_api.call("GET", f"/v1/ledger/entries?transfer_id={payment.id}", **AUDITOR)
    assert response.status_code == 200
    found = [
        (e["leg"], e["direction"], e["amount"], e["currency"]) for e in response.json["entries"]
    ]
    assert found == [
        (0, "debit", 1_000, "EUR"),
        (0, "credit", 1_000, "EUR"),
        (1, "debit", 1_080, "USD"),
        (1, "credit", 1_080, "USD"),
    ]


def test_the_trial_balance_balances_each_currency_on_its_own(fx_ledger, ledger_api):
    body = ledger_api.call("GET", "/v1/ledger/trial-balance", **AUDITOR).json
    assert body["balanced"] is True
    usd = next(c for c in body["currencies"] if c["currency"] == "USD")
    assert usd["debits"] == usd["credits"] == sum(1_080 + i for i in range(6))


def test_an_export_with_fx_payments_verifies(fx_ledger, ledger_api, public_key_file, tmp_path):
    response = ledger_api.call("GET", "/v1/ledger/export", **AUDITOR)
    lines = [json.loads(line) for line in response.data.decode().splitlines()]
    assert sum(1 for r in lines if r["type"] == "checkpoint") >= 3
    currencies = Counter((r["transfer_id"], r["currency"]) for r in lines if r["type"] == "entry")
    mixed = {t for t, _ in currencies if sum(1 for tt, _ in currencies if tt == t) == 2}
    assert mixed == {str(p.id) for p in fx_ledger["payments"]}
    path = support.write_jsonl(tmp_path / "ledger.jsonl", lines)
    result = CliRunner().invoke(
        main, ["audit", "verify", str(path), "--public-key", str(public_key_file)]
    )
    assert result.exit_code == 0, result.stdout
    assert result.stdout.startswith("OK: ") and "every transfer balanced" in result.stdout


def test_audit_check_accepts_fx_payments(runtime, database_url, fx_ledger, public_key_file):
    env = {"HOLDFAST_DATABASE_URL": database_url, "HOLDFAST_HOME": str(runtime.settings.home)}
    args = ["audit", "check", "--public-key", str(public_key_file)]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.stdout
    assert result.stdout.startswith("OK (database): ")
