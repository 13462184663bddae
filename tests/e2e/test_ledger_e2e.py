"""The auditor's path end to end: `holdfast dev` seals on its own, the export verifies offline
with the served public key (as bare PEM) and the latest digest, one entry's proof verifies
without it, and a changed line is caught."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import HOLDFAST, Dev

pytestmark = pytest.mark.e2e
OPERATOR = "accounts:read accounts:write transfers:read transfers:write operator"


def test_dev_seals_and_the_export_verifies_offline(dev: Dev, tmp_path: Path) -> None:
    ops, auditor = dev.client("ops", OPERATOR), dev.client("auditor", "ledger:read")
    funding, wallet = str(uuid.uuid4()), str(uuid.uuid4())
    ops.post(
        "/v1/accounts",
        json={"id": funding, "currency": "EUR", "owner": "bank", "overdraft_limit": None},
    )
    ops.post("/v1/accounts", json={"id": wallet, "currency": "EUR", "owner": "alice"})
    transfer_ids = []
    for amount in (100, 250, 75):
        transfer_id = str(uuid.uuid4())
        response = ops.post(
            "/v1/transfers",
            json={
                "id": transfer_id,
                "debit_account_id": funding,
                "credit_account_id": wallet,
                "amount": amount,
                "currency": "EUR",
                "immediate": True,
            },
        )
        assert response.status_code == 201
        transfer_ids.append(transfer_id)
    deadline = time.monotonic() + 20  # the 1 s sealing tick covers them
    sealed: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        sealed = auditor.get("/v1/ledger/entries", params={"account_id": wallet}).json()["entries"]
        if len(sealed) == 3:
            break
        time.sleep(0.2)
    assert sorted(e["transfer_id"] for e in sealed) == sorted(transfer_ids)
    latest = auditor.get("/v1/ledger/checkpoints/latest").json()
    export = tmp_path / "ledger.jsonl"
    through_gateway = auditor.get("/v1/ledger/export", params={"to": str(latest["number"])})
    export.write_bytes(through_gateway.content)
    # The gateway streams it on (never holding a whole export), byte for byte the function's.
    assert through_gateway.headers.get("transfer-encoding") == "chunked"
    direct = httpx.get(
        f"{dev.functions['ledger']}/v1/ledger/export",
        params={"to": str(latest["number"])},
        headers={"Authorization": f"Bearer {dev.token('auditor', 'ledger:read')}"},
    )
    assert direct.status_code == 200  # the same, but for the header's exported_at
    assert direct.content.split(b"\n")[1:] == through_gateway.content.split(b"\n")[1:]
    key = tmp_path / "ledger.pem"  # curl -H "Accept: application/x-pem-file" ... > ledger.pem
    pem = auditor.get("/v1/ledger/public-key", headers={"Accept": "application/x-pem-file"})
    assert pem.headers["content-type"].startswith("application/x-pem-file")
    key.write_bytes(pem.content)
    assert pem.text == auditor.get("/v1/ledger/public-key").json()["public_key"]
    pinned = ["--expect-digest", str(latest["digest"])]
    verified = subprocess.run(
        [str(HOLDFAST), "audit", "verify", str(export), "--public-key", str(key), *pinned],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    proof = tmp_path / "proof.json"
    proof.write_bytes(auditor.get(f"/v1/ledger/entries/{sealed[1]['seq']}/proof").content)
    proven = subprocess.run(
        [str(HOLDFAST), "audit", "prove", str(proof), "--public-key", str(key)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proven.returncode == 0, proven.stdout + proven.stderr
    assert proven.stdout.startswith(f"OK: entry seq {sealed[1]['seq']} ")
    lines = export.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if json.loads(line).get("amount") == 250)
    lines[index] = lines[index].replace('"amount":250', '"amount":2500')
    forged = tmp_path / "forged.jsonl"
    forged.write_text("\n".join(lines) + "\n")
    caught = subprocess.run(
        [str(HOLDFAST), "audit", "verify", str(forged), "--public-key", str(key)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert caught.returncode == 1
    assert f"line {index + 1}" in caught.stdout + caught.stderr
