"""What someone who can read every row of the database learns of personal data.

Changing sealed ledger history is covered where the ledger is (tests/integration/ledger:
`holdfast audit check` and `audit verify` name the changed entry); forging a token needs a
key that is not in the database (tests/security/test_tokens_http.py: a foreign key is 401).
"""

from __future__ import annotations

import hashlib
import json

from tests.conftest import snapshot
from tests.security.conftest import Http, World, new_id

MARKER = "Zebediah Quarrington, 12 Rue des Secrets"


def every_value(db) -> str:
    return json.dumps(snapshot(db), ensure_ascii=False)


def test_metadata_is_nowhere_in_the_database_in_clear(http: Http, world: World, db) -> None:
    account = {"id": new_id(), "currency": "EUR", "owner": "alice", "metadata": {"name": MARKER}}
    assert http.call("POST", "/v1/accounts", account).status_code == 201
    transfer = {
        "id": new_id(),
        "currency": "EUR",
        "debit_account_id": world.alice,
        "credit_account_id": world.bob,
        "amount": 5,
        "metadata": {"reference": MARKER},
    }
    assert http.call("POST", "/v1/transfers", transfer).status_code == 201
    # The API gives it back to its owner...
    read = http.call("GET", f"/v1/accounts/{account['id']}")
    assert read.get_json()["metadata"] == {"name": MARKER}
    # ...but no table (accounts, transfers, outbox events, inbox, ledger) holds it in clear.
    stored = every_value(db)
    assert MARKER not in stored
    assert MARKER.encode().hex() not in stored


def test_a_guess_of_transfer_metadata_cannot_be_confirmed_from_the_database(
    http: Http, world: World, db
) -> None:
    transfer_id = new_id()
    metadata = {"reference": "rent March"}
    transfer = {
        "id": transfer_id,
        "currency": "EUR",
        "debit_account_id": world.alice,
        "credit_account_id": world.bob,
        "amount": 5,
        "metadata": metadata,
    }
    assert http.call("POST", "/v1/transfers", transfer).status_code == 201
    guess = json.dumps(metadata, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(f"{transfer_id}:{guess}".encode()).hexdigest()
    assert digest not in every_value(db)
