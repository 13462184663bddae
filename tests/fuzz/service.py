"""The three functions behind one WSGI callable, routed like `holdfast dev`'s gateway, with
rate limits off (the fuzz and matrix runs send more than a customer would), and seed data."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import functions_framework

from holdfast.adapters.tokens import DevIssuer
from holdfast.entrypoints import gateway
from holdfast.entrypoints import runtime as runtime_module
from holdfast.entrypoints.runtime import Runtime
from holdfast.services import ledger as ledger_service
from tests.conftest import ROOT

FUNCTIONS = ("accounts", "transfers", "ledger")
EVERY_SCOPE = "accounts:read accounts:write transfers:read transfers:write ledger:read operator"
WSGI = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def unlimited(runtime: Runtime) -> Runtime:
    """Install a copy of `runtime` without the per-token rate limit."""
    settings = dataclasses.replace(runtime.settings, rate_limit_per_s=0.0)
    installed = dataclasses.replace(runtime, settings=settings)
    runtime_module.install(installed)
    return installed


def function_app(name: str) -> WSGI:
    app: WSGI = functions_framework.create_app(
        target=name, source=str(ROOT / "functions" / name / "main.py")
    )
    return app


def gateway_app() -> WSGI:
    """One WSGI app for the whole `/v1` API: the path prefix picks the function."""
    apps = {name: function_app(name) for name in FUNCTIONS}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        name = gateway.function_for(environ.get("PATH_INFO", "")) or "accounts"
        return apps[name](environ, start_response)

    return app


@dataclass
class Seed:
    """Accounts and transfers that exist, for fuzz cases to aim at."""

    accounts: list[str] = field(default_factory=list)
    transfers: list[str] = field(default_factory=list)


def seed(client: Any, issuer: DevIssuer, runtime: Runtime, owner: str = "fuzz") -> Seed:
    """A funding account, customer accounts of `owner`, reservations, confirmed transfers, and
    a sealed checkpoint (so the ledger reads have something to show)."""
    headers = {"Authorization": f"Bearer {issuer.issue('seed', EVERY_SCOPE)}"}
    made = Seed()

    def post(path: str, body: dict[str, Any]) -> None:
        response = client.post(path, json=body, headers=headers)
        assert response.status_code in {200, 201}, response.get_json()

    bank = str(uuid.uuid4())
    post("/v1/accounts", {"id": bank, "currency": "EUR", "owner": "bank", "overdraft_limit": None})
    made.accounts.append(bank)
    for index in range(3):
        account = str(uuid.uuid4())
        post("/v1/accounts", {"id": account, "currency": "EUR", "owner": owner, "metadata": {}})
        made.accounts.append(account)
        paid = str(uuid.uuid4())
        legs = {"debit_account_id": bank, "credit_account_id": account, "amount": 100_000}
        post("/v1/transfers", {"id": paid, "currency": "EUR", **legs, "immediate": True})
        held = str(uuid.uuid4())
        back = {"debit_account_id": account, "credit_account_id": bank, "amount": 10 + index}
        post("/v1/transfers", {"id": held, "currency": "EUR", **back, "timeout_s": 86_400})
        made.transfers += [paid, held]
    ledger_service.seal_pending(runtime.db, runtime.ledger_signer)
    return made
