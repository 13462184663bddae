"""JSON Schemas of event data: shipped files are the generated ones, real data validates."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from holdfast.adapters.database import Database
from holdfast.adapters.signing import Ed25519Signer
from holdfast.entrypoints.events import INBOUND, data_schemas
from holdfast.event_models import OUTBOUND, dataschema, render
from holdfast.services import ledger
from holdfast.services import transfers as transfer_service
from tests.conftest import Api
from tests.integration.events.conftest import cloudevent, post_event
from tests.integration.helpers import OPS, funded, open_account

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "schemas" / "events"
CONTRACT_TYPES = {
    "dev.holdfast.account.open.v1",
    "dev.holdfast.transfer.reserve.v1",
    "dev.holdfast.transfer.confirm.v1",
    "dev.holdfast.transfer.cancel.v1",
    "dev.holdfast.account.opened.v1",
    "dev.holdfast.transfer.reserved.v1",
    "dev.holdfast.transfer.confirmed.v1",
    "dev.holdfast.transfer.cancelled.v1",
    "dev.holdfast.transfer.expired.v1",
    "dev.holdfast.transfer.rejected.v1",
    "dev.holdfast.ledger.checkpoint.v1",
}


def shipped(event_type: str) -> dict[str, Any]:
    return dict(json.loads((SHIPPED / f"{event_type}.json").read_text()))


def test_shipped_schema_files_equal_freshly_generated_ones() -> None:
    generated = data_schemas()
    assert generated.keys() >= CONTRACT_TYPES
    files = {p.name for p in SHIPPED.glob("*.json")}
    assert files == {f"{t}.json" for t in generated}, "regenerate: see entrypoints/events.py"
    for event_type, document in generated.items():
        text = (SHIPPED / f"{event_type}.json").read_text()
        assert text == render(document), (
            f"{event_type}.json is stale: .venv/bin/python -m holdfast.entrypoints.events "
            "schemas/events"
        )
        jsonschema.Draft202012Validator.check_schema(document)
        assert document["$id"] == dataschema(event_type)


def real_outbound_data(
    accounts_api: Api, transfers_api: Api, db: Database
) -> list[tuple[str, Any]]:
    """Every outbound type, made by real requests, events and sealing."""
    alice = funded(accounts_api, transfers_api, 10_000)
    bob = open_account(accounts_api, owner="bob", metadata={"tier": "gold"})

    def reserve(**extra: Any) -> str:
        body = {
            "id": str(uuid.uuid4()),
            "debit_account_id": alice,
            "credit_account_id": bob,
            "amount": 100,
            "currency": "EUR",
            **extra,
        }
        assert transfers_api.call("POST", "/v1/transfers", body, **OPS).status_code == 201
        return str(body["id"])

    transfers_api.call("POST", f"/v1/transfers/{reserve()}/confirm", {"amount": 50}, **OPS)
    transfers_api.call("POST", f"/v1/transfers/{reserve()}/cancel", **OPS)
    transfers_api.call("POST", f"/v1/transfers/{uuid.uuid4()}/cancel", **OPS)  # fenced
    multi = {
        "id": str(uuid.uuid4()),
        "currency": "EUR",
        "legs": [
            {"debit_account_id": alice, "credit_account_id": bob, "amount": 5},
            {"debit_account_id": alice, "credit_account_id": bob, "amount": 7},
        ],
        "timeout_s": 1,
    }
    assert transfers_api.call("POST", "/v1/transfers", multi, **OPS).status_code == 201
    for table in ("transfers", "holds"):
        db.run(
            lambda c, t=table: c.execute(
                sa.text(
                    f"UPDATE {t} SET expires_at = now() - interval '1 s' WHERE expires_at IS NOT NULL"
                )
            )
        )
    transfer_service.sweep_expired(db)
    post_event(
        transfers_api,
        cloudevent(
            "dev.holdfast.transfer.reserve.v1",
            {
                "id": str(uuid.uuid4()),
                "debit_account_id": bob,
                "credit_account_id": alice,
                "amount": 10**9,
                "currency": "EUR",
            },
        ),
    )
    post_event(
        accounts_api,
        cloudevent("dev.holdfast.account.open.v1", {"id": bob, "currency": "USD", "owner": "bob"}),
    )
    ledger.seal_pending(db, Ed25519Signer(Ed25519PrivateKey.generate()))
    with db.engine.connect() as c:
        return [(r.type, r.data) for r in c.execute(sa.text("SELECT type, data FROM outbox"))]


def test_real_outbound_data_fits_its_model_and_shipped_schema(
    accounts_api: Api, transfers_api: Api, db: Database
) -> None:
    produced = real_outbound_data(accounts_api, transfers_api, db)
    assert {t for t, _ in produced} == set(OUTBOUND)
    for event_type, data in produced:
        model = OUTBOUND[event_type]
        model.model_validate(data)
        jsonschema.validate(data, shipped(event_type), format_checker=jsonschema.FormatChecker())
        # The model names every field the services send (and no more): no silent drift.
        assert set(data) == set(model.model_fields), event_type


def test_checkpoint_schema_is_a_permissive_object_with_the_documented_fields() -> None:
    schema = shipped("dev.holdfast.ledger.checkpoint.v1")
    assert schema["type"] == "object" and schema.get("required", []) == []
    assert set(schema["properties"]) >= {
        "first_seq",
        "last_seq",
        "digest",
        "previous_digest",
        "signature",
    }
    jsonschema.validate({"number": 1, "anything": "else"}, schema)


@pytest.mark.parametrize(
    ("event_type", "data", "valid"),
    [
        ("dev.holdfast.transfer.cancel.v1", {"id": str(uuid.uuid4())}, True),
        ("dev.holdfast.transfer.cancel.v1", {"id": str(uuid.uuid4()), "x": 1}, False),
        ("dev.holdfast.transfer.confirm.v1", {"id": str(uuid.uuid4()), "amount": 5}, True),
        ("dev.holdfast.transfer.confirm.v1", {"id": str(uuid.uuid4()), "amount": 0}, False),
        ("dev.holdfast.transfer.confirm.v1", {"id": str(uuid.uuid4()), "amount": "5"}, False),
        (
            "dev.holdfast.account.open.v1",
            {"id": str(uuid.uuid4()), "currency": "EUR", "owner": "a"},
            True,
        ),
        (
            "dev.holdfast.account.open.v1",
            {"id": str(uuid.uuid4()), "currency": "eur", "owner": "a"},
            False,
        ),
    ],
)
def test_inbound_schemas_accept_and_refuse_what_the_functions_do(
    event_type: str, data: Any, valid: bool
) -> None:
    errors = list(jsonschema.Draft202012Validator(shipped(event_type)).iter_errors(data))
    assert (not errors) is valid
    model_ok = True
    try:
        INBOUND[event_type].model_validate(data)
    except ValueError:
        model_ok = False
    assert model_ok is valid
