"""Fixtures of the ledger tests: the ledger function, its signer, and the dev public key."""

from __future__ import annotations

from pathlib import Path

import pytest

from holdfast.adapters.signing import Ed25519Signer, public_pem
from holdfast.adapters.tokens import DevIssuer
from holdfast.entrypoints.runtime import Runtime
from tests.conftest import Api, function_client


@pytest.fixture
def ledger_api(runtime: Runtime, issuer: DevIssuer) -> Api:
    return Api(function_client("ledger"), issuer)


@pytest.fixture
def signer(runtime: Runtime) -> Ed25519Signer:
    """The key the ledger function signs with (HOLDFAST_LEDGER_SIGNING_KEY_FILE)."""
    return runtime.ledger_signer


@pytest.fixture
def public_key_file(signer: Ed25519Signer, tmp_path: Path) -> Path:
    path = tmp_path / "ledger-public.pem"
    path.write_text(public_pem(signer.public_key))
    return path
