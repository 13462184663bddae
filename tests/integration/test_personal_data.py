"""Personal data at rest: metadata is sealed with AES-GCM under a rotatable key."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from cryptography.exceptions import InvalidTag

from holdfast.adapters.crypto import MetadataCipher, key_id_of, write_key_file
from holdfast.adapters.database import Database, create_engine
from holdfast.domain.accounts import NormalBalance, OpenAccount
from holdfast.domain.actors import SYSTEM
from holdfast.entrypoints.cli import main
from holdfast.services import accounts
from holdfast.services.keys import rotate_metadata_keys
from tests.conftest import Api
from tests.integration.helpers import funded, open_account

NAME = "Alice Example"
ADDRESS = "1 Secret Street, Springfield"


def raw_rows(db: Database, table: str) -> str:
    with db.engine.connect() as c:
        return repr(c.execute(sa.text(f"SELECT * FROM {table}")).fetchall())


def test_metadata_is_sealed_in_the_database_and_open_through_the_api(
    accounts_api: Api, transfers_api: Api, db: Database
) -> None:
    account_id = open_account(accounts_api, metadata={"name": NAME, "address": ADDRESS})
    got = accounts_api.call("GET", f"/v1/accounts/{account_id}").json
    assert got["metadata"] == {"name": NAME, "address": ADDRESS}
    payer = funded(accounts_api, transfers_api, 100)
    transfer = {
        "id": str(uuid.uuid4()),
        "debit_account_id": payer,
        "credit_account_id": account_id,
        "amount": 5,
        "currency": "EUR",
        "metadata": {"reference": f"rent for {NAME}"},
    }
    assert (
        transfers_api.call("POST", "/v1/transfers", transfer).json["metadata"]
        == transfer["metadata"]
    )
    for table in ("accounts", "transfers", "outbox"):  # events carry no metadata either
        rows = raw_rows(db, table)
        assert NAME not in rows and ADDRESS not in rows and "Springfield" not in rows
    with db.engine.connect() as c:
        sealed = c.execute(
            sa.text(
                "SELECT metadata, metadata_sealed, metadata_key_id FROM accounts WHERE id = :i"
            ),
            {"i": account_id},
        ).one()
    assert sealed.metadata == {} and sealed.metadata_key_id == db.cipher.active
    assert key_id_of(bytes(sealed.metadata_sealed)) == db.cipher.active
    # Replaying the transfer still compares its metadata (by digest): same is same, other is other.
    assert transfers_api.call("POST", "/v1/transfers", transfer).status_code == 201
    changed = transfers_api.call(
        "POST", "/v1/transfers", {**transfer, "metadata": {"reference": "x"}}
    )
    assert (changed.status_code, changed.json["code"]) == (409, "exists_with_different_fields")
    assert "metadata" in changed.json["detail"]


def test_a_sealed_value_opens_only_on_its_own_row() -> None:
    cipher = MetadataCipher({"k": b"\x01" * 32}, "k")
    blob = cipher.seal({"name": NAME}, row_id="row-1")
    assert cipher.open(blob, row_id="row-1") == {"name": NAME}
    with pytest.raises(InvalidTag):
        cipher.open(blob, row_id="row-2")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(InvalidTag):
        cipher.open(tampered, row_id="row-1")


def test_rotation_reseals_every_row_and_old_keys_can_then_go(database_url: str) -> None:
    old = MetadataCipher({"old": b"\x02" * 32}, "old")
    first = Database(create_engine(database_url, pool_size=2), cipher=old)
    ids = [uuid.uuid4() for _ in range(7)]
    for i in ids:
        accounts.open_account(
            first,
            OpenAccount(i, "EUR", "o", NormalBalance.CREDIT, 0, {"name": f"{NAME} {i}"}),
            SYSTEM,
        )
    with first.engine.begin() as c:  # a row from before sealing existed: plaintext
        legacy = uuid.uuid4()
        c.execute(
            sa.text(
                "INSERT INTO accounts (id, currency, owner, status, normal_balance, overdraft_limit, "
                "metadata, created_at, updated_at) VALUES (:i, 'EUR', 'o', 'open', 'credit', 0, "
                "CAST(:m AS JSONB), now(), now())"
            ),
            {"i": legacy, "m": json.dumps({"name": NAME})},
        )
    first.dispose()
    both = MetadataCipher({"old": b"\x02" * 32, "new": b"\x03" * 32}, "new")
    second = Database(create_engine(database_url, pool_size=2), cipher=both)
    try:
        assert rotate_metadata_keys(second, batch_max=3) == {"accounts": 8, "transfers": 0}
        assert rotate_metadata_keys(second) == {"accounts": 0, "transfers": 0}
    finally:
        second.dispose()
    only_new = Database(
        create_engine(database_url, pool_size=2),
        cipher=MetadataCipher({"new": b"\x03" * 32}, "new"),
    )
    try:
        for i in [*ids, legacy]:
            assert accounts.get_account(only_new, i, SYSTEM).metadata["name"].startswith(NAME)
        assert NAME not in raw_rows(only_new, "accounts")
    finally:
        only_new.dispose()


def test_keys_cli_adds_a_key_and_rotates(database_url: str, tmp_path: Path) -> None:
    key_file = tmp_path / "metadata-keys.json"
    write_key_file(key_file, {"k1": b"\x04" * 32}, "k1")
    env = {
        "HOLDFAST_DATABASE_URL": database_url,
        "HOLDFAST_METADATA_KEYS_FILE": str(key_file),
        "HOLDFAST_HOME": str(tmp_path / "home"),
    }
    db = Database(
        create_engine(database_url, pool_size=1), cipher=MetadataCipher.from_file(key_file)
    )
    accounts.open_account(
        db, OpenAccount(uuid.uuid4(), "EUR", "o", NormalBalance.CREDIT, 0, {"name": NAME}), SYSTEM
    )
    db.dispose()
    runner = CliRunner()
    added = runner.invoke(main, ["keys", "add", "--file", str(key_file), "--id", "k2"], env=env)
    assert added.exit_code == 0, added.output
    document = json.loads(key_file.read_text())
    assert document["active"] == "k2" and len(base64.b64decode(document["keys"]["k2"])) == 32
    rotated = runner.invoke(main, ["keys", "rotate"], env=env)
    assert rotated.exit_code == 0, rotated.output
    assert "1 accounts" in rotated.output and "k2" in rotated.output
    again = runner.invoke(main, ["keys", "add", "--file", str(key_file), "--id", "k2"], env=env)
    assert again.exit_code != 0
