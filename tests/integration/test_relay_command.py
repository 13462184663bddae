"""`holdfast relay`: the production relay process delivers the outbox and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from holdfast.domain.accounts import NormalBalance, OpenAccount
from holdfast.domain.actors import SYSTEM
from holdfast.services import accounts
from tests.e2e.conftest import free_port
from tests.integration.events.conftest import Sink


def test_the_relay_command_delivers_and_stops_cleanly(db, database_url: str) -> None:
    account_id = uuid.uuid4()
    accounts.open_account(
        db, OpenAccount(account_id, "EUR", "o", NormalBalance.CREDIT, 0, {}), SYSTEM
    )
    sink = Sink().start()
    metrics_port = free_port()
    env = {
        **os.environ,
        "HOLDFAST_DATABASE_URL": database_url,
        "K_SINK": sink.url,
        "HOLDFAST_METRICS_PORT": str(metrics_port),
    }
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "holdfast"), "relay"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
            r.subject == str(account_id) for r in sink.accepted()
        ):
            time.sleep(0.05)
        assert any(r.subject == str(account_id) for r in sink.accepted())
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert "holdfast_outbox_published_total" in scraped
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
        sink.stop()
