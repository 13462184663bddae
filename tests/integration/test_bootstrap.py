"""The composition root: every setting reaches the object that uses it, there is no built-in
key, and a function that lacks a key refuses to start, naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from holdfast import bootstrap
from holdfast.adapters.crypto import read_key_file
from holdfast.adapters.signing import load_signer, raw_public
from holdfast.adapters.tokens import DevIssuer
from holdfast.config import MissingKey, MissingSetting, Settings
from holdfast.domain.errors import InvariantViolation, Unauthorized
from holdfast.domain.ledger import key_id_of
from holdfast.entrypoints.cli import main
from holdfast.entrypoints.runtime import EXIT_CONFIG, NEEDS, Runtime
from tests.conftest import ROOT, Api, KeyFiles, function_client


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a deployment gives a process with these settings."""
    assert settings.database_url is not None
    env = {
        "HOLDFAST_HOME": str(settings.home),
        "HOLDFAST_DATABASE_URL": settings.database_url,
        "HOLDFAST_METADATA_KEYS_FILE": str(settings.metadata_keys_file),
        "HOLDFAST_LEDGER_SIGNING_KEY_FILE": str(settings.ledger_signing_key_file),
        "HOLDFAST_JWKS_FILE": str(settings.jwks_file),
        "HOLDFAST_JWT_ISSUER": settings.jwt_issuer,
    }
    return {**env, **extra}


def built(env: dict[str, str], name: str = "transfers") -> Runtime:
    settings = Settings.from_env(env)
    runtime = Runtime.from_settings(settings, name)
    runtime.db.dispose()
    return runtime


def test_each_key_file_reaches_the_object_that_uses_it(
    settings: Settings, key_files: KeyFiles, issuer: DevIssuer
) -> None:
    runtime = built(environment(settings), "accounts")
    _, active = read_key_file(key_files.metadata)
    assert runtime.db.cipher.active == active == "test-1"
    ledger = built(environment(settings), "ledger")
    assert ledger.ledger_signer.key_id == load_signer(key_files.signing).key_id
    assert ledger.verifier.verify("Bearer " + issuer.issue("alice", "ledger:read")).sub == "alice"
    stranger = DevIssuer(
        key_files.jwks.parent / "other", issuer="holdfast-test", audience="holdfast"
    )
    with pytest.raises(Unauthorized):
        ledger.verifier.verify("Bearer " + stranger.issue("alice", "ledger:read"))


def test_a_function_gets_only_the_keys_it_needs(settings: Settings) -> None:
    ledger = built(environment(settings), "ledger")
    with pytest.raises(InvariantViolation, match="without a metadata key"):
        _ = ledger.db.cipher
    accounts = built(environment(settings), "accounts")
    with pytest.raises(InvariantViolation, match="without the ledger signing key"):
        _ = accounts.ledger_signer
    assert set(NEEDS) == {"accounts", "transfers", "ledger"}


@pytest.mark.parametrize(
    ("variable", "value", "read"),
    [
        ("HOLDFAST_DB_POOL_SIZE", "3", lambda rt: rt.db.engine.pool.size()),
        ("HOLDFAST_FAULT_SERIALIZATION_RATE", "0.25", lambda rt: rt.db.faults.rate),
        ("HOLDFAST_RATE_LIMIT_PER_S", "7.0", lambda rt: rt.limiter.rate_per_s),
        ("HOLDFAST_RATE_LIMIT_BURST", "9.0", lambda rt: rt.limiter.burst),
        ("HOLDFAST_OPERATOR_RATE_LIMIT_PER_S", "70.0", lambda rt: rt.operator_limiter.rate_per_s),
        ("HOLDFAST_OPERATOR_RATE_LIMIT_BURST", "90.0", lambda rt: rt.operator_limiter.burst),
        ("HOLDFAST_JWT_AUDIENCE", "bank-x", lambda rt: rt.verifier.audience),
        ("HOLDFAST_JWT_ISSUER", "idp-y", lambda rt: rt.verifier.issuer),
        ("HOLDFAST_HOME", "/tmp/elsewhere", lambda rt: str(rt.settings.home)),
    ],
)
def test_every_setting_reaches_its_object_through_the_root(
    settings: Settings, variable: str, value: str, read
) -> None:
    runtime = built(environment(settings, **{variable: value}))
    assert str(read(runtime)) == value


def test_the_fault_seed_replays_the_same_failures(settings: Settings) -> None:
    env = environment(settings, HOLDFAST_FAULT_SERIALIZATION_RATE="0.5", HOLDFAST_FAULT_SEED="1234")
    draws = [
        [built(env).db.faults.random.random() for _ in range(5)],
        [built(env).db.faults.random.random() for _ in range(5)],
    ]
    assert draws[0] == draws[1]


@pytest.mark.parametrize(
    ("function", "variable"),
    [
        ("accounts", "HOLDFAST_METADATA_KEYS_FILE"),
        ("transfers", "HOLDFAST_METADATA_KEYS_FILE"),
        ("ledger", "HOLDFAST_LEDGER_SIGNING_KEY_FILE"),
        ("ledger", "HOLDFAST_JWKS_FILE"),
        ("accounts", "HOLDFAST_DATABASE_URL"),
    ],
)
def test_a_function_missing_a_setting_refuses_to_start_and_names_it(
    settings: Settings, tmp_path: Path, function: str, variable: str
) -> None:
    """The function's real process (functions-framework loading functions/*/main.py), with
    one setting of its deployment left out: no built-in key, no silent fallback."""
    env = {**os.environ, **environment(settings)}
    del env[variable]
    env.pop("HOLDFAST_DEV_KEYS", None)
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "functions_framework",
            f"--target={function}",
            f"--source={ROOT / 'functions' / function / 'main.py'}",
            "--port=0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == EXIT_CONFIG, finished.stderr
    assert f"holdfast {function}: cannot start: {variable} is not set" in finished.stderr
    assert not (settings.home / "keys").exists()  # and made no key of its own


def test_without_key_files_outside_local_development_there_is_no_key(
    settings: Settings,
) -> None:
    bare = replace(settings, metadata_keys_file=None, ledger_signing_key_file=None, jwks_file=None)
    for needs in ({"metadata": True}, {"signing": True}, {"tokens": True}):
        with pytest.raises(MissingKey):
            bootstrap.keys(bare, **needs)
    with pytest.raises(MissingSetting, match="HOLDFAST_DATABASE_URL"):
        bootstrap.database(replace(settings, database_url=None), application_name="t", cipher=None)


def test_local_development_makes_its_keys_once_under_home(tmp_path: Path) -> None:
    dev = Settings.from_env(
        {
            "HOLDFAST_HOME": str(tmp_path / "home"),
            "HOLDFAST_DATABASE_URL": "postgresql://nowhere/db",
            "HOLDFAST_DEV_KEYS": "1",
        }
    )
    first = bootstrap.keys(dev, metadata=True, signing=True, tokens=True)
    again = bootstrap.keys(dev, metadata=True, signing=True, tokens=True)
    assert first.cipher is not None and again.cipher is not None
    assert first.cipher.active == again.cipher.active
    blob = first.cipher.seal({"name": "x"}, row_id="r")
    assert again.cipher.open(blob, row_id="r") == {"name": "x"}
    assert first.signer is not None and again.signer is not None
    assert first.signer.key_id == again.signer.key_id
    assert (tmp_path / "home" / "keys" / "metadata-keys.json").exists()


def test_the_served_public_key_is_the_configured_signing_key(
    runtime: Runtime, issuer: DevIssuer, key_files: KeyFiles
) -> None:
    ledger_api = Api(function_client("ledger"), issuer)
    served = ledger_api.call("GET", "/v1/ledger/public-key", scope="ledger:read").json
    public = load_signer(key_files.signing).public_key
    assert served["key_id"] == key_id_of(raw_public(public))
    assert (
        served["public_key"]
        == public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
    )


def test_the_relay_needs_a_database_url(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["relay", "--sink", "http://127.0.0.1:9"], env={"HOLDFAST_HOME": str(tmp_path)}
    )
    assert result.exit_code == 2
    assert "HOLDFAST_DATABASE_URL is not set" in result.output
