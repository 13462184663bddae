"""Production keys from a JWKS URL: tokens signed by a listed key pass, others do not."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from holdfast.adapters.tokens import DevIssuer, TokenVerifier
from holdfast.bootstrap import token_verifier as verifier
from holdfast.config import Settings
from holdfast.domain.errors import Unauthorized


@pytest.fixture
def jwks_server(tmp_path: Path) -> Iterator[tuple[str, DevIssuer]]:
    issuer = DevIssuer(tmp_path / "idp", issuer="https://idp.example", audience="holdfast")
    body = json.dumps(issuer.jwks()).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json", issuer
    server.shutdown()


def test_keys_from_a_jwks_url(jwks_server: tuple[str, DevIssuer], tmp_path: Path) -> None:
    url, idp = jwks_server
    settings = Settings.from_env(
        {
            "HOLDFAST_HOME": str(tmp_path / "home"),
            "HOLDFAST_JWKS_URL": url,
            "HOLDFAST_JWT_ISSUER": "https://idp.example",
        }
    )
    checker = verifier(settings)
    assert checker.verify("Bearer " + idp.issue("alice", "accounts:read")).sub == "alice"
    stranger = DevIssuer(tmp_path / "other", issuer="https://idp.example", audience="holdfast")
    with pytest.raises(Unauthorized):
        checker.verify("Bearer " + stranger.issue("alice", "accounts:read"))


def test_keys_from_a_jwks_file(tmp_path: Path) -> None:
    idp = DevIssuer(tmp_path / "idp", issuer="iss", audience="holdfast")
    settings = Settings.from_env(
        {
            "HOLDFAST_HOME": str(tmp_path / "home"),
            "HOLDFAST_JWKS_FILE": str(idp.write_jwks()),
            "HOLDFAST_JWT_ISSUER": "iss",
        }
    )
    assert isinstance(verifier(settings), TokenVerifier)
    assert verifier(settings).verify("Bearer " + idp.issue("bob", "ledger:read")).scopes == {
        "ledger:read"
    }
