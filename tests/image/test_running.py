"""The image running as knative/base runs it: accounts, transfers and ledger as functions and
`holdfast relay`, each with the environment, volumes and security context its manifest
gives it (read-only root, every capability dropped, uid 10001), its own database login from
migration 0005, and its secrets as files; against the suite's PostgreSQL (its Unix socket
mounted into the containers), on the host's network.

Through them: the README's flow (open accounts, pay in, reserve, confirm, read balances), an
inbound CloudEvent, the outbox relayed to a sink (a small HTTP server here), sealing, an
export that `holdfast audit verify` accepts, and the keys that reached the stored rows: the
metadata of an account opened by the container is sealed with the configured key, and the
ledger signs with the configured signing key. Also the cold start (container start to the
first 200 on /readyz), printed as a figure.

Every wait is a condition loop with a generous deadline: a busy machine only makes it slower.
"""

from __future__ import annotations

import http.server
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from holdfast.adapters.crypto import key_id_of, write_key_file
from holdfast.adapters.database import sqlalchemy_url
from holdfast.adapters.tokens import DevIssuer
from tests.conftest import TEMPLATE, scratch_database
from tests.deploy import crosscheck as x
from tests.deploy import kustomize
from tests.deploy.manifests import KNATIVE
from tests.deploy.test_database_roles import GRANT, job_environment, new_users
from tests.deploy.tools import require, run
from tests.image.conftest import Image

ISSUER, AUDIENCE = "holdfast-image-test", "holdfast"
METADATA_KEY_ID = "image-test-2026"
SOCKET_IN_CONTAINER = "/run/postgresql"
READY_WITHIN_S = 180.0
COLD_STARTS = 5
ALL = "accounts:read accounts:write transfers:read transfers:write ledger:read operator"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(what: str, check: Callable[[], Any], deadline_s: float = READY_WITHIN_S) -> Any:
    """Poll `check` until it returns something true; fail naming `what` after the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > end:
            pytest.fail(f"{what}: not within {deadline_s:.0f} s")
        time.sleep(0.05)


# --- the sink the relay publishes to ------------------------------------------------------


@dataclass
class Sink:
    """A tiny HTTP sink: records each CloudEvent (binary or structured) and answers 202."""

    events: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    def serve(self) -> http.server.ThreadingHTTPServer:
        events = self.events

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-type", "").startswith("application/cloudevents"):
                    events.append(json.loads(body))
                else:
                    attributes = {
                        k[3:].lower(): v for k, v in self.headers.items() if k.lower()[:3] == "ce-"
                    }
                    events.append({**attributes, "data": json.loads(body or b"null")})
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


# --- the deployment: secrets, logins, containers --------------------------------------------


@dataclass
class Deployment:
    image: Image
    owner_url: str
    logins: dict[str, str]
    secrets: dict[str, Path]  # Secret name -> host folder holding its items
    signing_key: Ed25519PrivateKey
    issuer: DevIssuer
    sink: Sink
    mounts: list[str] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)  # workload -> its container
    started: list[str] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def token(self, sub: str, scope: str = ALL) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issuer.issue(sub, scope)}"}


def container_url(url: str) -> tuple[str, list[str]]:
    """The database URL as the container sees it, and the mount that makes it reachable: the
    embedded server listens on a Unix socket only, so its socket file is mounted in."""
    parts = urlsplit(url)
    socket_dir = parse_qs(parts.query).get("host", [""])[0]
    if not socket_dir.startswith("/"):
        return url, []  # a TCP server: reachable on the host's network as it is
    port = urlsplit(url).port or 5432
    socket_file = f"{socket_dir}/.s.PGSQL.{port}"
    inside = urlunsplit(parts._replace(query=f"host={SOCKET_IN_CONTAINER}"))
    return inside, ["-v", f"{socket_file}:{SOCKET_IN_CONTAINER}/.s.PGSQL.{port}"]


def write_secrets(
    folder: Path, signing_key: Ed25519PrivateKey, issuer: DevIssuer
) -> dict[str, Path]:
    """The three Secrets of knative/base as files, readable by uid 10001 (mode 0444)."""
    files = {
        "holdfast-jwks": ("jwks.json", json.dumps(issuer.jwks()).encode()),
        "holdfast-ledger-signing-key": (
            "signing-key.pem",
            signing_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        ),
    }
    found = {}
    for secret, (name, content) in files.items():
        (folder / secret).mkdir(parents=True)
        (folder / secret / name).write_bytes(content)
        found[secret] = folder / secret
    keys = folder / "holdfast-metadata-keys"
    write_key_file(keys / "keys.json", {METADATA_KEY_ID: bytes(range(32))}, METADATA_KEY_ID)
    found["holdfast-metadata-keys"] = keys
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o444)
    return found


def run_arguments(deployment: Deployment, workload: dict[str, Any]) -> list[str]:
    """`podman run` options that give the container what its manifest gives it."""
    spec = workload["spec"]["template"]["spec"]
    container = x.container(workload)
    context = {**spec.get("securityContext", {}), **container["securityContext"]}
    assert context["readOnlyRootFilesystem"] is True and context["capabilities"]["drop"] == ["ALL"]
    options = ["--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges"]
    options += ["--user", f"{context['runAsUser']}:{context['runAsGroup']}", "--network", "host"]
    for entry in container.get("env", []):
        options += ["-e", f"{entry['name']}={env_value(deployment, entry)}"]
    volumes = {v["name"]: v["secret"] for v in spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        folder = deployment.secrets[volumes[mount["name"]]["secretName"]]
        options += ["-v", f"{folder}:{mount['mountPath']}:ro"]
    return options + deployment.mounts


def env_value(deployment: Deployment, entry: dict[str, Any]) -> str:
    if "value" in entry:
        return str(entry["value"])
    reference = entry["valueFrom"]
    if "secretKeyRef" in reference:
        assert reference["secretKeyRef"]["name"] == "holdfast-database"
        return deployment.logins[reference["secretKeyRef"]["key"]]
    config = reference["configMapKeyRef"]
    assert config["name"] == "holdfast-auth"
    return {"issuer": ISSUER, "audience": AUDIENCE}[config["key"]]


def start(deployment: Deployment, workload: dict[str, Any], name: str, port: int) -> str:
    container = x.container(workload)
    options = run_arguments(deployment, workload)
    options += ["-e", f"PORT={port}", "--name", f"holdfast-test-{name}-{uuid.uuid4().hex[:8]}"]
    command: list[str] = []
    if "command" in container:  # the relay: `holdfast relay`
        options += ["--entrypoint", container["command"][0]]
        command = container["command"][1:]
        sink = f"http://127.0.0.1:{deployment.sink.port}"
        options += ["-e", f"K_SINK={sink}", "-e", f"HOLDFAST_METRICS_PORT={port}"]
    done = run([require("podman"), "run", "-d", *options, deployment.image.tag, *command])
    assert done.returncode == 0, done.stderr
    container_id = done.stdout.strip()
    deployment.started.append(container_id)
    return container_id


def running(container_id: str) -> bool:
    done = run([require("podman"), "inspect", "--format", "{{.State.Running}}", container_id])
    return done.stdout.strip() == "true"


def logs(container_id: str) -> str:
    done = run([require("podman"), "logs", container_id])
    return done.stdout + done.stderr


def wait_until_ready(url: str, container_id: str) -> None:
    def answered() -> bool:
        if not running(container_id):
            pytest.fail(f"{container_id[:12]} exited:\n{logs(container_id)[-3000:]}")
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(f"{url} ready", answered)


@pytest.fixture(scope="module")
def deployment(
    image: Image, server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("image-run")
    issuer = DevIssuer(folder / "issuer", issuer=ISSUER, audience=AUDIENCE)
    signing_key = Ed25519PrivateKey.generate()
    sink = Sink()
    server = sink.serve()
    with scratch_database(server_url, "img_", template=TEMPLATE) as owner_url:
        environment = job_environment(owner_url, new_users())
        GRANT.grant(owner_url, GRANT.logins_from(environment))
        logins, mounts = {}, []
        for name in ("accounts", "transfers", "ledger", "relay"):
            logins[name], mounts = container_url(
                environment[f"HOLDFAST_DATABASE_URL_{name.upper()}"]
            )
        found = Deployment(
            image,
            owner_url,
            logins,
            write_secrets(folder / "secrets", signing_key, issuer),
            signing_key,
            issuer,
            sink,
            mounts,
        )
        try:
            yield found
        finally:
            for container_id in found.started:
                run([require("podman"), "rm", "--force", "--time", "5", container_id])
            server.shutdown()


@pytest.fixture(scope="module")
def base_workloads() -> dict[str, dict[str, Any]]:
    return x.workloads(kustomize.render(KNATIVE / "base"))


@pytest.fixture(scope="module")
def started(deployment: Deployment, base_workloads: dict[str, dict[str, Any]]) -> Deployment:
    """All four workloads started together, then waited for."""
    ids = deployment.ids
    for name, workload in base_workloads.items():
        deployment.ports[name] = free_port()
        ids[name] = start(deployment, workload, name, deployment.ports[name])
    for name in ("accounts", "transfers", "ledger"):
        wait_until_ready(f"{deployment.url(name)}/readyz", ids[name])
    wait_until_ready(f"{deployment.url('relay')}/metrics", ids["relay"])
    return deployment


# --- the tests ------------------------------------------------------------------------------


def call(deployment: Deployment, name: str, method: str, path: str, sub: str, **kw: Any) -> Any:
    response = httpx.request(
        method, deployment.url(name) + path, headers=deployment.token(sub), timeout=30, **kw
    )
    assert response.status_code < 300, (path, response.status_code, response.text)
    return response.json()


def cloudevent(deployment: Deployment, name: str, event_type: str, data: Any) -> httpx.Response:
    """A binary-mode CloudEvent to the function's `POST /`, as a Trigger delivers it."""
    headers = {
        "ce-specversion": "1.0",
        "ce-type": event_type,
        "ce-source": "/image-test",
        "ce-id": str(uuid.uuid4()),
        "content-type": "application/json",
    }
    return httpx.post(deployment.url(name) + "/", headers=headers, json=data, timeout=30)


def test_the_readme_flow_events_sealing_and_export_through_the_image(
    started: Deployment, tmp_path: Path
) -> None:
    d = started
    bank, alice = str(uuid.uuid4()), str(uuid.uuid4())
    call(d, "accounts", "POST", "/v1/accounts", "bank", json={
        "id": bank, "currency": "EUR", "owner": "bank", "overdraft_limit": None,
        "metadata": {"name": "funding"}})  # fmt: skip
    call(d, "accounts", "POST", "/v1/accounts", "alice", json={
        "id": alice, "currency": "EUR", "owner": "alice", "metadata": {"name": "Alice"}})  # fmt: skip
    pay_in, pay_back = str(uuid.uuid4()), str(uuid.uuid4())
    call(d, "transfers", "POST", "/v1/transfers", "bank", json={
        "id": pay_in, "debit_account_id": bank, "credit_account_id": alice, "amount": 5000,
        "currency": "EUR", "immediate": True})  # fmt: skip
    reserved = call(d, "transfers", "POST", "/v1/transfers", "alice", json={
        "id": pay_back, "debit_account_id": alice, "credit_account_id": bank, "amount": 1250,
        "currency": "EUR"})  # fmt: skip
    assert reserved["state"] == "reserved"
    confirmed = call(d, "transfers", "POST", f"/v1/transfers/{pay_back}/confirm", "alice")
    assert confirmed["state"] == "confirmed"
    balance = call(d, "accounts", "GET", f"/v1/accounts/{alice}", "alice")["balance"]
    assert balance == {"posted": 3750, "available": 3750}

    # An inbound CloudEvent, as the account-open Trigger delivers it.
    carol = str(uuid.uuid4())
    opened = cloudevent(d, "accounts", "dev.holdfast.account.open.v1", {
        "id": carol, "currency": "EUR", "owner": "carol", "metadata": {"name": "Carol"}})  # fmt: skip
    assert opened.status_code == 200, opened.text
    assert call(d, "accounts", "GET", f"/v1/accounts/{carol}", "carol")["owner"] == "carol"

    # Outbound: the relay publishes the outbox to K_SINK.
    wait_for(
        "account.opened of the inbound event at the sink",
        lambda: [
            e for e in d.sink.events
            if e.get("type") == "dev.holdfast.account.opened.v1" and e.get("subject") == carol
        ],
    )  # fmt: skip

    # Sealing (the PingSource's tick), then an export the auditor's tool accepts.
    tick = cloudevent(d, "ledger", "dev.knative.sources.ping", {"task": "seal"})
    assert tick.status_code < 300, tick.text
    latest = call(d, "ledger", "GET", "/v1/ledger/checkpoints/latest", "auditor")
    export = httpx.get(
        d.url("ledger") + "/v1/ledger/export", headers=d.token("auditor"), timeout=60
    )
    assert export.status_code == 200, export.text
    served_pem = call(d, "ledger", "GET", "/v1/ledger/public-key", "auditor")["public_key"]
    (tmp_path / "export.jsonl").write_text(export.text)
    (tmp_path / "ledger.pem").write_text(served_pem)
    holdfast = str(Path(sys.executable).parent / "holdfast")
    export_file, key_file = str(tmp_path / "export.jsonl"), str(tmp_path / "ledger.pem")
    verified = subprocess.run(  # the auditor's command from this checkout's venv
        [holdfast, "audit", "verify", export_file, "--public-key", key_file],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert latest["number"] >= 1

    check_the_logs(d)


def test_the_ledger_signs_with_the_configured_key(started: Deployment) -> None:
    served_pem = call(started, "ledger", "GET", "/v1/ledger/public-key", "auditor")["public_key"]
    configured_pem = (
        started.signing_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    assert served_pem.strip() == configured_pem.strip()


def test_account_metadata_is_sealed_with_the_configured_key(started: Deployment) -> None:
    """The metadata key given to the container as a file is the key it seals with, not one of
    its own making, for an account opened over HTTP and one opened by a CloudEvent."""
    d = started
    by_http, by_event = str(uuid.uuid4()), str(uuid.uuid4())
    account = {"currency": "EUR", "owner": "dora", "metadata": {"name": "Dora"}}
    call(d, "accounts", "POST", "/v1/accounts", "dora", json={"id": by_http, **account})
    event = cloudevent(d, "accounts", "dev.holdfast.account.open.v1", {"id": by_event, **account})
    assert event.status_code == 200, event.text
    account_ids = [by_http, by_event]
    engine = sa.create_engine(sqlalchemy_url(d.owner_url))
    query = sa.text(
        "SELECT id::text, metadata, metadata_sealed, metadata_key_id FROM accounts "
        "WHERE id::text IN :ids"
    ).bindparams(sa.bindparam("ids", expanding=True))
    try:
        with engine.connect() as connection:
            rows = connection.execute(query, {"ids": account_ids}).all()
    finally:
        engine.dispose()
    assert len(rows) == len(account_ids)
    for row_id, plaintext, sealed, key_id in rows:
        assert b"name" not in bytes(plaintext or b""), "personal data stored in the clear"
        # b"\x01" | len(key_id) | key_id | nonce | ciphertext (holdfast.adapters.crypto)
        assert (row_id, key_id_of(bytes(sealed)), key_id) == (
            row_id,
            METADATA_KEY_ID,
            METADATA_KEY_ID,
        )


def check_the_logs(d: Deployment) -> None:
    for container_id in d.started:
        text = logs(container_id)
        assert "Control server error" not in text, text[-2000:]
        assert "Traceback" not in text, text[-4000:]


def test_the_images_health_check_passes(started: Deployment) -> None:
    """`podman healthcheck run`: the HEALTHCHECK the image carries (docker format)."""
    done = run([require("podman"), "healthcheck", "run", started.ids["accounts"]], timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_cold_start(deployment: Deployment, base_workloads: dict[str, dict[str, Any]]) -> None:
    """Container start to the first 200 on /readyz, accounts, several times: a figure, not an
    assertion (the machine is shared)."""
    took = []
    for _ in range(COLD_STARTS):
        port = free_port()
        begun = time.monotonic()
        container_id = start(deployment, base_workloads["accounts"], "cold", port)
        wait_until_ready(f"http://127.0.0.1:{port}/readyz", container_id)
        took.append(time.monotonic() - begun)
        run([require("podman"), "rm", "--force", "--time", "2", container_id])
    print(
        f"[figures] image cold start (podman run to the first 200 on /readyz, accounts): "
        f"median {statistics.median(took):.2f} s of {COLD_STARTS} "
        f"({', '.join(f'{t:.2f}' for t in took)})"
    )
