"""The manifests agree with the code they deploy: event routing, environment, probes and
concurrency; and each check catches a deliberately broken sample."""

from __future__ import annotations

import copy
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from holdfast.adapters.database import Database
from holdfast.adapters.tokens import DevIssuer, TokenVerifier
from holdfast.config import Settings
from holdfast.entrypoints import runtime as runtime_module
from holdfast.entrypoints.web import Api
from tests.deploy import crosscheck as x
from tests.deploy import kustomize, terraform
from tests.deploy.manifests import KNATIVE, ROOT

OVERLAYS = ("dev", "prod")
# What a function must get from its manifest, whatever defaults the code has.
REQUIRED: dict[str, set[str]] = {
    name: {
        "FUNCTION_TARGET",
        "FUNCTION_SOURCE",
        "THREADS",
        "HOLDFAST_DATABASE_URL",
        "HOLDFAST_JWKS_FILE",
        "HOLDFAST_JWT_ISSUER",
        "HOLDFAST_JWT_AUDIENCE",
    }
    for name in x.FUNCTIONS
}
# The relay publishes the outbox: the Broker's address comes from the SinkBinding.
REQUIRED["relay"] = {"HOLDFAST_DATABASE_URL", "K_SINK"}
REQUIRED["ledger"] |= {"HOLDFAST_LEDGER_SIGNING_KEY_FILE"}
# Personal data at rest: without the key file each pod would seal with a key of its own.
REQUIRED["accounts"] |= {"HOLDFAST_METADATA_KEYS_FILE"}
REQUIRED["transfers"] |= {"HOLDFAST_METADATA_KEYS_FILE"}
# Variables that must never reach a cluster.
FORBIDDEN = {
    "HOLDFAST_FAULT_SERIALIZATION_RATE",
    "HOLDFAST_FAULT_SEED",
    "HOLDFAST_PROJECT_DIR",
    "HOLDFAST_DEV_KEYS",  # local development only: it makes keys under HOLDFAST_HOME
}
# Each workload logs in as its own database user: its own key of the holdfast-database Secret.
DATABASE_KEYS = {
    "accounts": "accounts",
    "transfers": "transfers",
    "ledger": "ledger",
    "relay": "relay",
}


def rendered(overlay: str) -> list[dict[str, Any]]:
    return kustomize.render(KNATIVE / "overlays" / overlay)


def api_of(function: str) -> Api:
    api: Api = importlib.import_module(f"holdfast.entrypoints.{function}").api
    return api


def handled() -> dict[str, set[str]]:
    return {name: set(api_of(name).events) for name in x.FUNCTIONS}


# The built image's environment as far as concurrency goes (tests/image checks the real one).
IMAGE_ENV = {"THREADS": "8", "PORT": "8080"}


# --- events ------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_trigger_type_is_handled_and_every_handled_type_is_delivered(overlay: str) -> None:
    assert x.event_problems(rendered(overlay), handled()) == []


def test_every_inbound_contract_type_has_a_trigger() -> None:
    from holdfast.entrypoints.events import INBOUND

    triggered = {
        t["spec"]["filter"]["attributes"]["type"] for t in x.of_kind(rendered("prod"), "Trigger")
    }
    assert set(INBOUND) <= triggered


def test_a_trigger_for_an_unhandled_type_is_reported() -> None:
    documents = rendered("prod")
    rogue = copy.deepcopy(x.of_kind(documents, "Trigger")[0])
    rogue["metadata"]["name"] = "account-close"
    rogue["spec"]["filter"]["attributes"]["type"] = "dev.holdfast.account.close.v1"
    tables = {"accounts": {"dev.holdfast.account.open.v1"}, "transfers": set(), "ledger": set()}
    problems = x.event_problems([*documents, rogue], tables)
    assert "Trigger account-close: accounts does not handle dev.holdfast.account.close.v1" in (
        problems
    )


def test_a_handled_type_without_a_trigger_is_reported() -> None:
    documents = [d for d in rendered("prod") if d["metadata"]["name"] != "transfer-cancel"]
    problems = x.event_problems(documents, handled())
    assert "transfers handles dev.holdfast.transfer.cancel.v1 but nothing delivers it" in problems


def test_a_ping_to_a_function_without_a_timer_handler_is_reported() -> None:
    tables = {"accounts": set(), "transfers": {"dev.holdfast.transfer.reserve.v1"}, "ledger": set()}
    problems = x.event_problems(x.of_kind(rendered("dev"), "PingSource"), tables)
    assert "PingSource transfers-expiry-sweep: transfers does not handle " + x.PING_TYPE in problems
    assert "PingSource ledger-sealing: ledger does not handle " + x.PING_TYPE in problems


def test_trigger_to_a_missing_broker_or_non_function_is_reported() -> None:
    trigger = copy.deepcopy(x.of_kind(rendered("dev"), "Trigger")[0])
    trigger["spec"]["broker"] = "default"
    trigger["spec"]["subscriber"]["ref"]["name"] = "dead-letter"
    problems = x.event_problems([trigger], {"accounts": set()})
    assert problems[:2] == [
        "Trigger account-open: no Broker named 'default'",
        "Trigger account-open: subscriber 'dead-letter' is not a function",
    ]


# --- environment ---------------------------------------------------------------------------


def code_env_reads() -> dict[str, set[str]]:
    return x.env_reads([ROOT / "shared" / "holdfast", ROOT / "functions"])


def documented() -> dict[str, str]:
    return x.documented_defaults((ROOT / "docs" / "deploy.md").read_text())


def test_the_scanner_finds_what_config_reads() -> None:
    reads = code_env_reads()
    assert {"HOLDFAST_DATABASE_URL", "HOLDFAST_JWKS_FILE", "K_SINK"} <= set(reads)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_the_code_reads_is_set_or_has_a_documented_default(overlay: str) -> None:
    problems = x.env_problems(code_env_reads(), rendered(overlay), documented(), REQUIRED)
    assert problems == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_test_only_variable_reaches_a_cluster(overlay: str) -> None:
    for name, service in x.workloads(rendered(overlay)).items():
        assert not (x.env_set(service, rendered(overlay)) & FORBIDDEN), name


def test_an_unset_undocumented_variable_is_reported(tmp_path: Path) -> None:
    (tmp_path / "new.py").write_text(
        'import os\nKEY = os.environ["HOLDFAST_NEW_KEY"]\nURL = os.getenv("HOLDFAST_NEW_URL")\n'
    )
    reads = x.env_reads([tmp_path])
    assert set(reads) == {"HOLDFAST_NEW_KEY", "HOLDFAST_NEW_URL"}
    problems = x.env_problems(reads, rendered("prod"), {"HOLDFAST_NEW_URL": "required"}, {})
    assert "HOLDFAST_NEW_KEY is read by the code but not documented in docs/deploy.md" in problems
    assert "ledger: HOLDFAST_NEW_URL is read but not set and has no default" in problems


def test_a_required_variable_missing_from_a_manifest_is_reported() -> None:
    documents = rendered("prod")
    ledger = x.function_services(documents)["ledger"]
    env = x.container(ledger)["env"]
    env[:] = [e for e in env if e["name"] != "HOLDFAST_LEDGER_SIGNING_KEY_FILE"]
    problems = x.env_problems({}, documents, {}, REQUIRED)
    assert problems == ["ledger: HOLDFAST_LEDGER_SIGNING_KEY_FILE must be set in its manifest"]


def test_k_sink_comes_only_from_a_matching_sinkbinding() -> None:
    documents = rendered("prod")
    relay = x.workloads(documents)["relay"]
    assert "K_SINK" in x.env_set(relay, documents)
    assert "K_SINK" not in x.env_set(x.function_services(documents)["accounts"], documents)
    del relay["metadata"]["labels"]["holdfast.dev/relays-outbox"]
    assert "K_SINK" not in x.env_set(relay, documents)


def test_the_relay_runs_two_replicas_of_holdfast_relay_from_the_functions_image() -> None:
    for overlay in OVERLAYS:
        documents = rendered(overlay)
        relay = x.workloads(documents)["relay"]
        assert relay["spec"]["replicas"] == 2
        assert x.container(relay)["command"] == ["holdfast", "relay"]
        images = {x.container(s)["image"] for s in x.function_services(documents).values()}
        assert images == {x.container(relay)["image"]}, overlay
        selector = relay["spec"]["selector"]["matchLabels"]
        labels = relay["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()


def test_the_relay_command_exists_and_takes_its_sink_from_k_sink() -> None:
    from holdfast.entrypoints.cli import main

    command = main.commands["relay"]
    sink = next(p for p in command.params if p.name == "sink")
    assert sink.envvar == "K_SINK" and sink.required


def secret_keys_read(workload: dict[str, Any]) -> dict[str, set[str]]:
    """Secret name -> keys a workload reads (env secretKeyRef and secret volume items)."""
    read: dict[str, set[str]] = {}
    for entry in x.container(workload).get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            read.setdefault(ref["name"], set()).add(ref["key"])
    for volume in workload["spec"]["template"]["spec"].get("volumes", []):
        secret = volume.get("secret")
        if secret:
            keys = {item["key"] for item in secret.get("items", [])}
            read.setdefault(secret["secretName"], set()).update(keys)
    return read


def test_secret_and_config_references_are_created_by_terraform() -> None:
    """Every Secret key and ConfigMap a workload reads is one infra/terraform/modules/app
    makes."""
    app = ROOT / "infra" / "terraform" / "modules" / "app"
    made = terraform.kubernetes_object_names(app)
    data = terraform.secret_data_keys(app)
    config_maps = made["kubernetes_config_map_v1"]
    for name, workload in x.workloads(rendered("prod")).items():
        for secret, keys in secret_keys_read(workload).items():
            assert secret in data, (name, secret)
            assert keys <= data[secret], (name, secret, keys - data[secret])
        for entry in x.container(workload).get("env", []):
            source = entry.get("valueFrom", {})
            if "configMapKeyRef" in source:
                assert source["configMapKeyRef"]["name"] in config_maps, entry


def test_each_workload_logs_in_with_its_own_database_key() -> None:
    for overlay in OVERLAYS:
        for name, workload in x.workloads(rendered(overlay)).items():
            assert secret_keys_read(workload)["holdfast-database"] == {DATABASE_KEYS[name]}


def test_a_secret_key_terraform_does_not_write_is_caught() -> None:
    relay = x.workloads(rendered("prod"))["relay"]
    x.container(relay)["env"][0]["valueFrom"]["secretKeyRef"]["key"] = "url2"
    data = terraform.secret_data_keys(ROOT / "infra" / "terraform" / "modules" / "app")
    assert not secret_keys_read(relay)["holdfast-database"] <= data["holdfast-database"]


def test_no_workload_can_read_the_schema_owners_url() -> None:
    for name, service in x.workloads(rendered("prod")).items():
        assert "holdfast-migration" not in str(service), name


# --- probes ------------------------------------------------------------------------------


@pytest.fixture
def sqlite_runtime(tmp_path: Path) -> Iterator[Runtime]:
    """A runtime whose database is an in-memory SQLite: enough for the probes' SELECT 1."""
    settings = Settings.from_env({"HOLDFAST_HOME": str(tmp_path)})
    issuer = DevIssuer(tmp_path, issuer="t", audience="t")
    runtime = Runtime(
        settings=settings,
        db=Database(sa.create_engine("sqlite://"), cipher=None),
        verifier=TokenVerifier(issuer.jwks(), issuer="t", audience="t"),
    )
    runtime_module.install(runtime)
    try:
        yield runtime
    finally:
        runtime_module.install(None)


Runtime = runtime_module.Runtime


def probe_status(api: Api, path: str) -> int:
    request = Request(EnvironBuilder(path=path, method="GET").get_environ())
    return api(request).status_code


def probe_paths(service: dict[str, Any]) -> dict[str, str]:
    container = x.container(service)
    return {
        kind: container[kind]["httpGet"]["path"] for kind in ("livenessProbe", "readinessProbe")
    }


@pytest.mark.parametrize("function", x.FUNCTIONS)
def test_probe_paths_answer_200_without_a_token(function: str, sqlite_runtime: Runtime) -> None:
    paths = probe_paths(x.function_services(rendered("prod"))[function])
    assert paths == {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for path in paths.values():
        assert probe_status(api_of(function), path) == 200, path


def test_readiness_fails_when_the_database_does_not_answer(tmp_path: Path) -> None:
    settings = Settings.from_env({"HOLDFAST_HOME": str(tmp_path)})
    issuer = DevIssuer(tmp_path, issuer="t", audience="t")
    unreachable = sa.create_engine(f"sqlite:///{tmp_path}/no/such/dir/db.sqlite")
    runtime_module.install(
        Runtime(
            settings=settings,
            db=Database(unreachable, cipher=None),
            verifier=TokenVerifier(issuer.jwks(), issuer="t", audience="t"),
        )
    )
    try:
        assert probe_status(api_of("accounts"), "/readyz") == 503
        assert probe_status(api_of("accounts"), "/healthz") == 200
    finally:
        runtime_module.install(None)


def test_a_probe_on_a_path_the_function_does_not_serve_is_caught(sqlite_runtime: Runtime) -> None:
    assert probe_status(api_of("transfers"), "/livez") == 404


# --- concurrency ---------------------------------------------------------------------------


def test_gunicorn_threads_come_from_the_threads_variable() -> None:
    assert x.gunicorn_threads({"THREADS": "3"}) == 3


def test_a_concurrency_mismatch_is_reported() -> None:
    documents = rendered("prod")
    transfers = x.function_services(documents)["transfers"]
    transfers["spec"]["template"]["spec"]["containerConcurrency"] = 16
    problems = x.concurrency_problems(documents, IMAGE_ENV)
    assert problems == ["transfers: containerConcurrency 16 != gunicorn threads 8"]


def test_missing_threads_is_reported() -> None:
    documents = rendered("prod")
    accounts = x.function_services(documents)["accounts"]
    env = x.container(accounts)["env"]
    env[:] = [e for e in env if e["name"] != "THREADS"]
    problems = x.concurrency_problems(documents, {"PORT": "8080"})
    assert problems == ["accounts: THREADS unset: gunicorn would use 4 x the node's CPUs"]
