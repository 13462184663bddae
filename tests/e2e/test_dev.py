"""`holdfast dev` as a user runs it: a real process tree over real HTTP."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
import sqlalchemy as sa

from holdfast.adapters.crypto import key_id_of
from tests.e2e.conftest import HOLDFAST, Dev, start_dev, stop_dev

pytestmark = pytest.mark.e2e


def test_a_transfer_end_to_end(dev: Dev) -> None:
    alice, bank = dev.client("alice"), dev.client("bank", "accounts:write transfers:write operator")
    funding, wallet, shop = (str(uuid.uuid4()) for _ in range(3))
    assert (
        bank.post(
            "/v1/accounts",
            json={"id": funding, "currency": "EUR", "owner": "bank", "overdraft_limit": None},
        ).status_code
        == 201
    )
    assert (
        alice.post(
            "/v1/accounts", json={"id": wallet, "currency": "EUR", "owner": "alice"}
        ).status_code
        == 201
    )
    assert (
        bank.post("/v1/accounts", json={"id": shop, "currency": "EUR", "owner": "shop"}).status_code
        == 201
    )
    paid_in = bank.post(
        "/v1/transfers",
        json={
            "id": str(uuid.uuid4()),
            "debit_account_id": funding,
            "credit_account_id": wallet,
            "amount": 5000,
            "currency": "EUR",
            "immediate": True,
        },
    )
    assert paid_in.json()["state"] == "confirmed"
    purchase = {
        "id": str(uuid.uuid4()),
        "debit_account_id": wallet,
        "credit_account_id": shop,
        "amount": 1250,
        "currency": "EUR",
    }
    reserved = alice.post("/v1/transfers", json=purchase)
    assert (reserved.status_code, reserved.json()["state"]) == (201, "reserved")
    assert alice.get(f"/v1/accounts/{wallet}").json()["balance"] == {
        "posted": 5000,
        "available": 3750,
    }
    confirmed = alice.post(f"/v1/transfers/{purchase['id']}/confirm")
    assert (confirmed.status_code, confirmed.json()["state"]) == (200, "confirmed")
    assert alice.get(f"/v1/accounts/{wallet}").json()["balance"] == {
        "posted": 3750,
        "available": 3750,
    }
    refused = alice.post(
        "/v1/transfers", json={**purchase, "id": str(uuid.uuid4()), "amount": 10_000}
    )
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "insufficient_funds"


def test_the_gateway_routes_by_prefix_and_needs_a_token(dev: Dev) -> None:
    with httpx.Client(base_url=dev.base_url) as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get(f"/v1/accounts/{uuid.uuid4()}").status_code == 401
        assert anonymous.get(f"/v1/transfers/{uuid.uuid4()}").status_code == 401
        assert anonymous.get("/v2/anything").status_code == 404


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_leaves_no_process_behind_and_data_survives(home: Path, sig: int) -> None:
    first = start_dev(home)
    account = str(uuid.uuid4())
    with first.client() as alice:
        assert (
            alice.post(
                "/v1/accounts", json={"id": account, "currency": "EUR", "owner": "alice"}
            ).status_code
            == 201
        )
    children = descendants(first.process.pid)
    assert len(children) >= 3  # three functions (and their gunicorn workers)
    assert stop_dev(first, sig) == 0
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []
    postgres = [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and str(home) in " ".join(p.info["cmdline"])
    ]
    assert postgres == []
    second = start_dev(home)
    try:
        with second.client() as alice:
            read = alice.get(f"/v1/accounts/{account}")
            assert read.status_code == 200, read.text + "".join(second.output[-40:])
    finally:
        stop_dev(second)


def test_without_k_sink_the_relay_publishes_into_the_local_ingress(dev: Dev) -> None:
    import time

    import sqlalchemy as sa

    account = str(uuid.uuid4())
    with dev.client() as alice:
        assert (
            alice.post(
                "/v1/accounts", json={"id": account, "currency": "EUR", "owner": "alice"}
            ).status_code
            == 201
        )
    engine = sa.create_engine(f"postgresql+psycopg://postgres@/holdfast?host={dev.home / 'pgdata'}")
    try:
        deadline = time.monotonic() + 20
        published = None
        while time.monotonic() < deadline and published is None:
            with engine.connect() as c:
                published = c.execute(
                    sa.text("SELECT published_at FROM outbox WHERE subject = :s"), {"s": account}
                ).scalar()
            time.sleep(0.1)
        assert published is not None
    finally:
        engine.dispose()


def test_a_key_rotation_end_to_end(dev: Dev) -> None:
    """Open an account with personal data, add a key and re-seal with `holdfast keys`
    (while the functions run), then read it back: the functions meet the new key and read
    the key file again; the stored rows name the new key."""
    account = str(uuid.uuid4())
    metadata = {"name": "Alice Example", "iban": "DE02120300000000202051"}
    with dev.client() as alice:
        opened = alice.post(
            "/v1/accounts",
            json={"id": account, "currency": "EUR", "owner": "alice", "metadata": metadata},
        )
        assert opened.status_code == 201, opened.text
    assert stored_key_ids(dev, account) == {"dev-1"}
    holdfast(dev, "keys", "add", "--id", "dev-2")
    rotated = holdfast(dev, "keys", "rotate")
    assert "re-sealed with key dev-2" in rotated
    assert stored_key_ids(dev, account) == {"dev-2"}
    with dev.client() as alice:
        read = alice.get(f"/v1/accounts/{account}")
        assert read.status_code == 200, read.text
        assert read.json()["metadata"] == metadata
        later = str(uuid.uuid4())
        assert (
            alice.post(
                "/v1/accounts",
                json={"id": later, "currency": "EUR", "owner": "alice", "metadata": metadata},
            ).status_code
            == 201
        )
    assert stored_key_ids(dev, later) == {"dev-2"}  # new rows under the new active key


def holdfast(dev: Dev, *args: str) -> str:
    """The CLI next to a running `holdfast dev` (same HOLDFAST_HOME, its embedded database)."""
    finished = subprocess.run(
        [str(HOLDFAST), *args], env=dev.env, capture_output=True, text=True, check=False
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    return finished.stdout


def stored_key_ids(dev: Dev, account: str) -> set[str]:
    """The key ids the database holds for the account's sealed metadata, read directly."""
    engine = sa.create_engine(f"postgresql+psycopg://postgres@/holdfast?host={dev.home / 'pgdata'}")
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT metadata_key_id, metadata_sealed FROM accounts WHERE id = :i"),
                {"i": account},
            ).all()
    finally:
        engine.dispose()
    assert rows, account
    assert all(key_id_of(bytes(row.metadata_sealed)) == row.metadata_key_id for row in rows)
    return {row.metadata_key_id for row in rows}


def test_a_killed_function_is_serving_again_within_moments(dev: Dev) -> None:
    """SIGKILL the transfers function's gunicorn master: its worker goes with it (its own
    process group), and the supervisor starts a new one on the same port."""
    url = dev.functions["transfers"]
    [master] = [
        p
        for p in psutil.Process(dev.process.pid).children()
        if "--target=transfers" in " ".join(p.cmdline())
    ]
    workers = master.children()
    killed_at = time.monotonic()
    master.kill()
    _gone, alive = psutil.wait_procs([master, *workers], timeout=30)
    assert alive == []  # no orphaned worker keeps the port
    back_after_s = None
    while time.monotonic() - killed_at < 60:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                back_after_s = time.monotonic() - killed_at
                break
        time.sleep(0.02)
    assert back_after_s is not None, "the transfers function did not come back"
    print(
        f"[figures] holdfast dev: a SIGKILLed function served /readyz again after "
        f"{back_after_s:.2f} s"
    )
    with dev.client() as alice:
        assert alice.get(f"/v1/transfers/{uuid.uuid4()}").status_code == 404
