"""Single-entry proofs through the real API and CLI: GET /v1/ledger/entries/{seq}/proof for
every entry of checkpoints of several sizes, `holdfast audit prove` on them (changed ones
refused), the public key as PEM or JSON, and `holdfast audit extends` for the holder of an old
checkpoint digest."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from holdfast.adapters.signing import Ed25519Keyring, public_pem
from holdfast.domain import merkle, proofs
from holdfast.entrypoints.cli import main
from holdfast.services import ledger as service
from tests.integration.ledger import support

AUDITOR = {"sub": "auditor", "scope": "ledger:read"}


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout


@pytest.fixture
def sealed(db, signer) -> list[Any]:
    """Checkpoints of 2, 6, 8 and more entries (batch sizes in transfers, whole ones each)."""
    accounts = support.open_accounts(db, 4)
    checkpoints = []
    for count, seed in ((1, 1), (3, 2), (4, 3), (7, 4)):
        support.random_payments(db, accounts, count, seed=seed, per_batch=count)
        checkpoints += support.seal_all(db, signer)
    return checkpoints


def proof(ledger_api, seq: int) -> dict[str, Any]:
    response = ledger_api.call("GET", f"/v1/ledger/entries/{seq}/proof", **AUDITOR)
    assert response.status_code == 200, response.json
    assert response.mimetype == "application/json"
    return response.json


def test_the_proof_of_every_entry_verifies(ledger_api, sealed, signer):
    keyring = Ed25519Keyring([signer.public_key])
    sizes = [c.entry_count for c in sealed]
    assert any(size & (size - 1) for size in sizes), sizes  # not only powers of two
    listed = ledger_api.call("GET", "/v1/ledger/checkpoints", **AUDITOR).json["checkpoints"]
    entries = ledger_api.call("GET", "/v1/ledger/entries?limit=1000", **AUDITOR).json["entries"]
    assert len(entries) == sum(sizes)
    for entry in entries:
        answer = proof(ledger_api, entry["seq"])
        assert set(answer) == {"entry", "checkpoint", "leaf_index", "audit_path"}
        assert answer["entry"] == entry  # as /v1/ledger/entries has it
        assert answer["checkpoint"] in listed  # the signed record as /v1/ledger/checkpoints
        assert answer["leaf_index"] == entry["seq"] - answer["checkpoint"]["first_seq"]
        assert proofs.check_inclusion(answer, keyring).entry == entry


def test_audit_prove_checks_a_proof_offline(ledger_api, sealed, public_key_file, tmp_path):
    last = sealed[-1]
    path = tmp_path / "proof.json"
    path.write_bytes(
        ledger_api.call("GET", f"/v1/ledger/entries/{last.last_seq - 2}/proof", **AUDITOR).data
    )
    code, out = cli("audit", "prove", str(path), "--public-key", str(public_key_file))
    assert code == 0, out
    assert out.startswith(f"OK: entry seq {last.last_seq - 2} (transfer ")
    assert f"is leaf {last.entry_count - 3} of checkpoint {last.number} " in out
    assert out.strip().endswith(f"checkpoint digest {last.digest}")


def changes(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One changed copy per part of the answer."""

    def copy() -> dict[str, Any]:
        return json.loads(json.dumps(answer))

    made: dict[str, dict[str, Any]] = {}
    made["entry amount"] = copy()
    made["entry amount"]["entry"]["amount"] += 1
    made["path hash"] = copy()
    first = made["path hash"]["audit_path"][0]
    made["path hash"]["audit_path"][0] = ("0" if first[0] != "0" else "1") + first[1:]
    made["leaf index"] = copy()
    made["leaf index"]["leaf_index"] ^= 1
    made["checkpoint record"] = copy()
    made["checkpoint record"]["checkpoint"]["last_seq"] += 1
    made["signature"] = copy()
    signature = answer["checkpoint"]["signature"]
    made["signature"]["checkpoint"]["signature"] = signature[:-1] + (
        "0" if signature[-1] != "0" else "1"
    )
    return made


def test_audit_prove_refuses_a_changed_proof(ledger_api, sealed, public_key_file, tmp_path):
    answer = proof(ledger_api, sealed[2].first_seq + 3)
    for kind, bad in changes(answer).items():
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(bad))
        code, out = cli("audit", "prove", str(path), "--public-key", str(public_key_file))
        assert code == 1, (kind, out)
        assert out.startswith("FAILED "), (kind, out)
    decoy = json.dumps(answer).replace('"leaf_index"', '"leaf_index": 0, "leaf_index"', 1)
    path.write_text(decoy)
    code, out = cli("audit", "prove", str(path), "--public-key", str(public_key_file))
    assert (code, out) == (
        1,
        "FAILED the proof: not I-JSON: the member name 'leaf_index' appears twice in one object\n",
    )


def test_an_unsealed_or_unknown_seq_is_entry_not_found(db, ledger_api, sealed):
    accounts = support.open_accounts(db, 2)
    support.pay(db, [support.reserve([(accounts[0], accounts[1], 5)])])  # queued, not sealed
    unsealed = sealed[-1].last_seq + 1
    for seq in (unsealed, unsealed + 1, 0, 9223372036854775807):
        response = ledger_api.call("GET", f"/v1/ledger/entries/{seq}/proof", **AUDITOR)
        assert response.status_code == 404, seq
        assert response.mimetype == "application/problem+json"
        assert response.json["code"] == "entry_not_found"


@pytest.mark.parametrize(
    "seq", ["abc", "-1", "1.5", "9223372036854775808", "1e3", "%20", "0x10", "\uff11"]
)
def test_a_malformed_seq_is_a_problem_not_a_failure(ledger_api, seq):
    response = ledger_api.call("GET", f"/v1/ledger/entries/{seq}/proof", **AUDITOR)
    assert 400 <= response.status_code < 500, (seq, response.status_code)
    assert response.mimetype == "application/problem+json"


def test_the_proof_needs_the_ledger_read_scope(ledger_api, sealed):
    path = f"/v1/ledger/entries/{sealed[0].first_seq}/proof"
    refused = ledger_api.call("GET", path, sub="ops", scope="accounts:read operator")
    assert refused.status_code == 403
    assert ledger_api.client.get(path).status_code == 401


# -- the public key, as PEM or as the JSON answer ----------------------------------------------


def test_the_public_key_as_bare_pem_or_json(ledger_api, sealed, signer, tmp_path):
    pem = ledger_api.call(
        "GET", "/v1/ledger/public-key", **AUDITOR, headers={"Accept": "application/x-pem-file"}
    )
    assert pem.status_code == 200
    assert pem.mimetype == "application/x-pem-file"
    assert pem.data.decode() == public_pem(signer.public_key)
    assert pem.headers["Vary"] == "Accept"
    assert pem.headers["X-Content-Type-Options"] == "nosniff"
    for accept in (None, "*/*", "application/json", "application/x-pem-file;q=0.5, */*"):
        headers = {"Accept": accept} if accept else {}
        answer = ledger_api.call("GET", "/v1/ledger/public-key", **AUDITOR, headers=headers)
        assert answer.mimetype == "application/json", accept
        assert answer.json["key_id"] == signer.key_id

    export = tmp_path / "ledger.jsonl"
    export.write_bytes(ledger_api.call("GET", "/v1/ledger/export", **AUDITOR).data)
    as_pem, as_json = tmp_path / "key.pem", tmp_path / "key.json"
    as_pem.write_bytes(pem.data)  # curl -H 'Accept: application/x-pem-file' ... > key.pem
    as_json.write_bytes(ledger_api.call("GET", "/v1/ledger/public-key", **AUDITOR).data)
    for key in (as_pem, as_json):
        code, out = cli("audit", "verify", str(export), "--public-key", str(key))
        assert code == 0, out


def test_a_mislabelled_json_key_is_refused(ledger_api, sealed, tmp_path):
    answer = ledger_api.call("GET", "/v1/ledger/public-key", **AUDITOR).json
    answer["key_id"] = "0" * 32
    key = tmp_path / "key.json"
    key.write_text(json.dumps(answer))
    export = tmp_path / "ledger.jsonl"
    export.write_bytes(ledger_api.call("GET", "/v1/ledger/export", **AUDITOR).data)
    result = CliRunner().invoke(main, ["audit", "verify", str(export), "--public-key", str(key)])
    assert result.exit_code == 2
    assert "is not the id of its public key" in result.output


# -- holders of an old checkpoint ----------------------------------------------------------------


def test_an_auditor_holding_an_old_digest_checks_what_is_new(
    ledger_api, sealed, public_key_file, tmp_path
):
    held = sealed[1]  # checkpoint 2, from an earlier audit
    latest = ledger_api.call("GET", "/v1/ledger/checkpoints/latest", **AUDITOR).json
    key = str(public_key_file)

    page = tmp_path / "checkpoints.json"
    page.write_bytes(
        ledger_api.call("GET", f"/v1/ledger/checkpoints?after={held.number}", **AUDITOR).data
    )
    code, out = cli(
        "audit", "extends", str(page), "--held-digest", held.digest, "--public-key", key,
        "--expect-digest", latest["digest"],
    )  # fmt: skip
    assert code == 0, out
    assert out.startswith(f"OK: checkpoint {latest['number']} (digest {latest['digest']}) ")
    code, out = cli("audit", "extends", str(page), "--held-digest", sealed[0].digest,
                    "--public-key", key)  # fmt: skip
    assert code == 1 and "neither has the held digest" in out, out
    code, out = cli("audit", "extends", str(page), "--held-digest", held.digest,
                    "--public-key", key, "--expect-digest", held.digest)  # fmt: skip
    assert code == 1 and "not on the expected digest" in out, out

    newer = tmp_path / "newer.jsonl"
    newer.write_bytes(
        ledger_api.call("GET", f"/v1/ledger/export?from={held.number + 1}", **AUDITOR).data
    )
    code, out = cli("audit", "verify", str(newer), "--public-key", key,
                    "--extends", held.digest, "--expect-digest", latest["digest"])  # fmt: skip
    assert code == 0, out
    assert out.strip().endswith(
        f"it extends the held checkpoint {held.number}; it ends on the expected digest"
    )
    code, out = cli("audit", "verify", str(newer), "--public-key", key,
                    "--extends", sealed[0].digest)  # fmt: skip
    assert code == 1 and "does not extend the checkpoint with digest" in out, out


def test_the_service_proof_matches_the_export(db, ledger_api, sealed):
    """The path is computed from the stored leaf hashes, the same ones the export lists."""
    lines = support.export_lines(db)
    checkpoint = next(r for r in lines if r["type"] == "checkpoint" and r["number"] == 4)
    answer = service.prove(db, checkpoint["first_seq"])
    leaves = [bytes.fromhex(leaf) for leaf in checkpoint["leaves"]]
    assert answer["audit_path"] == [p.hex() for p in merkle.audit_path(leaves, 0)]
