from holdfast.services import ledger as service
from tests.integration.ledger import support


def test_seal_export_verify(db, signer, public_key_file, tmp_path):
    ids = support.open_accounts(db, 5)
    support.random_payments(db, ids, 30)
    sealed = support.seal_all(db, signer)
    assert sealed
    records = support.export_lines(db)
    path = support.write_jsonl(tmp_path / "x.jsonl", records)
    from click.testing import CliRunner
    from holdfast.entrypoints.cli import main

    result = CliRunner().invoke(
        main, ["audit", "verify", str(path), "--public-key", str(public_key_file)]
    )
    print(result.output)
    assert result.exit_code == 0
    report = service.check(
        db,
        __import__("holdfast.adapters.signing", fromlist=["x"]).Ed25519Keyring([signer.public_key]),
    )
    print(report)
    assert report.ok
