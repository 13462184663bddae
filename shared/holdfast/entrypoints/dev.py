"""`holdfast dev`: everything on one machine, in the foreground.

Starts the database (embedded unless HOLDFAST_DATABASE_URL is set), migrates it, starts each
function in its own functions-framework process, then serves the gateway, which also runs
the outbox relay (to K_SINK when set, else into its own events ingress). Ctrl-C or SIGTERM
stops the gateway and the relay, then the functions, then the embedded database: nothing is
left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.requests import Request
from starlette.responses import Response

from holdfast import bootstrap
from holdfast.adapters.database import Database, EmbeddedPostgres, create_engine, migrate
from holdfast.adapters.relay import Claimed, HttpPublisher, PublishFailed, binary_request
from holdfast.config import Settings
from holdfast.entrypoints import gateway
from holdfast.entrypoints.ingress import Ingress, load_triggers
from holdfast.services.relay import Relay, relay_name

FUNCTIONS = ("accounts", "transfers", "ledger")
READY_TIMEOUT_S = 60.0
RELAY_POOL_SIZE = 2
SUPERVISOR_POLL_S = 0.1  # a crashed function is restarted within this (plus its start)


def project_dir() -> Path:
    """Where functions/ and knative/ live: HOLDFAST_PROJECT_DIR or the source checkout."""
    configured = os.environ.get("HOLDFAST_PROJECT_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if `holdfast dev` dies without cleaning up."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_function(name: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    source = project_dir() / "functions" / name / "main.py"
    return subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [
            sys.executable,
            "-m",
            "functions_framework",
            f"--target={name}",
            f"--source={source}",
            "--host=127.0.0.1",
            f"--port={port}",
        ],
        env=env,
        # Its own process group: gunicorn's master and worker end together (a worker left
        # behind by a killed master would keep the port).
        start_new_session=True,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads exist yet in the child
    )


def signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    """Send `signum` to the process's whole group (it leads its own: start_new_session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def wait_ready(urls: dict[str, str], processes: dict[str, subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    waiting = dict(urls)
    while waiting:
        for name, url in list(waiting.items()):
            if processes[name].poll() is not None:
                raise RuntimeError(f"the {name} function exited with {processes[name].returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    del waiting[name]
        if time.monotonic() > deadline:
            raise RuntimeError(f"functions not ready: {', '.join(waiting)}")
        time.sleep(0.05)


class Supervisor:
    """Restarts a function process that dies (as Kubernetes restarts a crashed container)."""

    def __init__(
        self,
        processes: dict[str, subprocess.Popen[bytes]],
        ports: dict[str, int],
        env: dict[str, str],
    ) -> None:
        self.processes = processes
        self.ports = ports
        self.env = env
        self.stopping = threading.Event()
        self.restarts = 0
        self.thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def start(self) -> Supervisor:
        self.thread.start()
        return self

    def _watch(self) -> None:
        while not self.stopping.wait(SUPERVISOR_POLL_S):
            for name, process in list(self.processes.items()):
                if process.poll() is not None and not self.stopping.is_set():
                    print(f"{name} exited with {process.returncode}: restarting", flush=True)
                    signal_group(process, signal.SIGKILL)  # what is left of it, if anything
                    self.processes[name] = start_function(name, self.ports[name], self.env)
                    self.restarts += 1

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        stop(self.processes)


def stop(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        if process.poll() is None:
            signal_group(process, signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            signal_group(process, signal.SIGKILL)
            process.wait()
        signal_group(process, signal.SIGKILL)  # a worker that outlived its master


class IngressPublisher:
    """Without K_SINK, events go straight into this process's events ingress, as the
    Broker would take them, without an HTTP round trip to ourselves."""

    def __init__(self, ingress: Ingress) -> None:
        self.ingress = ingress
        self.client: httpx.AsyncClient | None = None

    async def publish(self, row: Claimed, timeout_s: float) -> None:
        if self.client is None:
            self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s))
        headers, body = binary_request(row)
        status = self.ingress.accept(self.client, headers, body)
        if status >= 300:
            raise PublishFailed(f"the events ingress answered {status}")

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()


def relay_job(
    db: Database, sink: str | None, ingress: Ingress
) -> Callable[[], Coroutine[Any, Any, None]]:
    """The outbox relay as a gateway background job: runs until the gateway stops."""

    async def job() -> None:
        publisher = HttpPublisher(sink) if sink else IngressPublisher(ingress)
        try:
            await Relay(db, publisher, name=relay_name("dev-relay")).run()
        finally:
            await publisher.aclose()

    return job


def run(port: int, settings: Settings) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)
    embedded = None
    relay_db: Database | None = None
    processes: dict[str, subprocess.Popen[bytes]] = {}
    supervisor: Supervisor | None = None
    # SIGTERM ends the process the way Ctrl-C does, so the `finally` below always runs.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        url = settings.database_url
        if url is None:
            embedded = EmbeddedPostgres(settings.home)
            url = embedded.start()
        engine = create_engine(url, pool_size=1)
        migrate(engine)
        engine.dispose()
        # Keys not configured are made under HOLDFAST_HOME, here, before the functions start
        # (so that they do not race to make them); they load them through the same root.
        configured = replace(settings, database_url=url, dev_keys=True)
        bootstrap.keys(configured, metadata=True, signing=True, tokens=True)
        env = {
            **os.environ,
            "HOLDFAST_HOME": str(settings.home),
            "HOLDFAST_DATABASE_URL": url,
            "HOLDFAST_DEV_KEYS": "1",
            # One process per function takes every local client: more threads, larger group
            # commits. (A Knative pod keeps THREADS = containerConcurrency; pods scale out.)
            "THREADS": os.environ.get("THREADS", "16"),
        }
        listener = socket.create_server(("127.0.0.1", port))
        ports = {name: free_port() for name in FUNCTIONS}
        upstreams = {name: f"http://127.0.0.1:{p}" for name, p in ports.items()}
        processes = {name: start_function(name, ports[name], env) for name in FUNCTIONS}
        wait_ready(upstreams, processes)
        supervisor = Supervisor(processes, ports, env).start()
        ingress = Ingress(
            load_triggers(project_dir() / "knative"), upstreams, settings.home / "dead-letter.jsonl"
        )

        async def accept(client: httpx.AsyncClient, request: Request) -> Response:
            status = ingress.accept(client, dict(request.headers), await request.body())
            return Response(status_code=status)

        relay_db = bootstrap.database(  # events carry no personal data: no key
            configured,
            application_name="holdfast-relay",
            cipher=None,
            pool_size=RELAY_POOL_SIZE,
        )
        sink = settings.k_sink
        app = gateway.build(
            upstreams,
            ingress=accept,
            ticks=(
                gateway.Tick("transfers", '{"task":"expire"}'),
                gateway.Tick("ledger", '{"task":"seal"}'),
            ),
            background=(relay_job(relay_db, sink, ingress),),
        )
        for name, upstream in upstreams.items():
            print(f"  {name} function at {upstream}", flush=True)
        print(f"Holdfast is running at http://127.0.0.1:{port}", flush=True)
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        )
        server.run(sockets=[listener])
    except KeyboardInterrupt:
        pass
    finally:
        if relay_db is not None:
            relay_db.dispose()
        if supervisor is not None:
            supervisor.stop()
        stop(processes)
        if embedded is not None:
            embedded.stop()
        print("Holdfast stopped.", flush=True)
