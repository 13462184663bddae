"""Personal data at rest: metadata is sealed with AES-GCM under a rotatable key."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from cryptography.exceptions import InvalidTag

from holdfast import bootstrap
from holdfast.adapters.crypto import MetadataCipher, key_id_of, write_key_file
from holdfast.adapters.database import Database
from holdfast.config import Settings
from holdfast.domain.accounts import NormalBalance, OpenAccount
from holdfast.domain.actors import SYSTEM
from holdfast.entrypoints.cli import main
from holdfast.services import accounts
from tests.conftest import Api, KeyFiles
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
    # Sealed under the key of HOLDFAST_METADATA_KEYS_FILE (the test's key file), by id.
    assert sealed.metadata == {} and sealed.metadata_key_id == "test-1"
    assert key_id_of(bytes(sealed.metadata_sealed)) == "test-1"
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


def test_rotation_reseals_every_row_and_old_keys_can_then_go(
    settings: Settings, key_files: KeyFiles, db: Database
) -> None:
    """Through the composition root, as deployed: a function's database, the `holdfast keys`
    commands on the configured key file, then the old key removed from it."""
    ids = [uuid.uuid4() for _ in range(7)]
    for i in ids:
        accounts.open_account(
            db, OpenAccount(i, "EUR", "o", NormalBalance.CREDIT, 0, {"name": f"{NAME} {i}"}), SYSTEM
        )
    with db.engine.begin() as c:  # a row from before sealing existed: plaintext
        legacy = uuid.uuid4()
        c.execute(
            sa.text(
                "INSERT INTO accounts (id, currency, owner, status, normal_balance, overdraft_limit, "
                "metadata, created_at, updated_at) VALUES (:i, 'EUR', 'o', 'open', 'credit', 0, "
                "CAST(:m AS JSONB), now(), now())"
            ),
            {"i": legacy, "m": json.dumps({"name": NAME})},
        )
    env = cli_environment(settings)
    runner = CliRunner()
    added = runner.invoke(main, ["keys", "add", "--id", "test-2"], env=env)
    assert added.exit_code == 0, added.output
    document = json.loads(key_files.metadata.read_text())
    assert (
        document["active"] == "test-2" and len(base64.b64decode(document["keys"]["test-2"])) == 32
    )
    rotated = runner.invoke(main, ["keys", "rotate"], env=env)
    assert rotated.exit_code == 0, rotated.output
    assert "re-sealed with key test-2: 8 accounts, 0 transfers" in rotated.output
    assert runner.invoke(main, ["keys", "rotate"], env=env).output.endswith(
        "0 accounts, 0 transfers\n"
    )
    again = runner.invoke(main, ["keys", "add", "--id", "test-2"], env=env)
    assert again.exit_code != 0
    with db.engine.connect() as c:
        key_ids = c.execute(sa.text("SELECT DISTINCT metadata_key_id FROM accounts")).scalars()
        assert set(key_ids) == {"test-2"}
    # The running function (built before the new key existed) reads the file again when it
    # meets the new key, and seals from then on with it.
    assert accounts.get_account(db, ids[0], SYSTEM).metadata["name"].startswith(NAME)
    assert db.cipher.active == "test-2"
    # The old key can go: a function started with only the new key reads every row.
    write_key_file(
        key_files.metadata, {"test-2": base64.b64decode(document["keys"]["test-2"])}, "test-2"
    )
    restarted = bootstrap.database(
        settings, application_name="test", cipher=bootstrap.metadata_cipher(settings)
    )
    try:
        for i in [*ids, legacy]:
            assert accounts.get_account(restarted, i, SYSTEM).metadata["name"].startswith(NAME)
        assert NAME not in raw_rows(restarted, "accounts")
        assert not restarted.cipher.knows("test-1")
    finally:
        restarted.dispose()


def cli_environment(settings: Settings) -> dict[str, str]:
    """The environment a CLI run next to the functions has (the same settings)."""
    assert settings.metadata_keys_file is not None and settings.database_url is not None
    return {
        "HOLDFAST_DATABASE_URL": settings.database_url,
        "HOLDFAST_METADATA_KEYS_FILE": str(settings.metadata_keys_file),
        "HOLDFAST_HOME": str(settings.home),
    }
