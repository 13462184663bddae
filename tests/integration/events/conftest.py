"""Fixtures for the event tests: a real HTTP sink on 127.0.0.1 that records what it gets and
can be told to fail, CloudEvent builders (binary and structured), and outbox helpers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent

from holdfast.adapters import outbox, repository
from holdfast.adapters.database import Database
from holdfast.services.relay import Policy, Relay

# Short leases and backoffs: the tests exercise expiry and retry without long sleeps.
FAST = Policy(
    lease_s=2.0,
    send_timeout_s=0.5,
    clock_margin_s=0.1,
    backoff_s_first=0.02,
    backoff_s_max=0.1,
    idle_poll_s=0.01,
)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int
    started: float
    finished: float = 0.0

    @property
    def id(self) -> str:
        return self.headers.get("ce-id", "")

    @property
    def subject(self) -> str:
        return self.headers.get("ce-subject", "")

    def data(self) -> Any:
        return json.loads(self.body)


class Server(ThreadingHTTPServer):
    request_queue_size = 256  # many connections at once: no resets from a short backlog
    daemon_threads = True


@dataclass
class Sink:
    """Answers `status` (after `delay_s`); `decide(headers)` overrides both per request.
    Records every request, and any moment two requests for the same event id overlapped."""

    status: int = 202
    delay_s: float = 0.0
    decide: Callable[[dict[str, str]], tuple[int, float]] | None = None
    reply: tuple[dict[str, str], bytes] | None = None  # headers and body of a 200 answer
    requests: list[Received] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)
    in_flight: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> Sink:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                received = Received(headers, body, 0, time.monotonic())
                event_id = headers.get("ce-id", "")
                with sink.lock:
                    if event_id in sink.in_flight:
                        sink.overlaps.append(event_id)
                    sink.in_flight.add(event_id)
                    status, delay = (
                        sink.decide(headers) if sink.decide else (sink.status, sink.delay_s)
                    )
                try:
                    if delay:
                        time.sleep(delay)
                    received.status = status
                    received.finished = time.monotonic()
                    with sink.lock:  # recorded before answering: the client may look next
                        sink.requests.append(received)
                    headers, content = sink.reply if sink.reply and status == 200 else ({}, b"")
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                except OSError:
                    pass  # the client gave up (timeout): it counts as a failed delivery
                finally:
                    with sink.lock:
                        sink.in_flight.discard(event_id)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def accepted_ids(self) -> list[str]:
        return [r.id for r in self.accepted()]


@pytest.fixture
def sink() -> Iterator[Sink]:
    running = Sink().start()
    try:
        yield running
    finally:
        running.stop()


# -- CloudEvents in -----------------------------------------------------------------------


def cloudevent(
    event_type: str, data: Any, *, event_id: str | None = None, source: str = "/tests/events"
) -> CloudEvent:
    return CloudEvent(
        {
            "type": event_type,
            "source": source,
            "id": event_id or str(uuid.uuid4()),
            "datacontenttype": "application/json",
        },
        data,
    )


def encode(event: CloudEvent, mode: str) -> tuple[dict[str, str], bytes]:
    headers, body = to_binary(event) if mode == "binary" else to_structured(event)
    return dict(headers), body


def post_event(api: Any, event: CloudEvent, mode: str = "binary") -> Any:
    headers, body = encode(event, mode)
    return api.client.post("/", headers=headers, data=body)


# -- the outbox ---------------------------------------------------------------------------


def emit(db: Database, subject: str, kind: str, data: dict[str, Any] | None = None) -> str:
    """Commit one outbox event for `subject` in a transaction of its own; return its id."""
    event = outbox.OutboundEvent(
        type=f"dev.holdfast.test.{kind}.v1",
        source="/tests/relay",
        subject=subject,
        data=data or {"kind": kind},
        key=f"{subject}/{kind}",
    )
    db.run(lambda c: outbox.append(c, [event], repository.now(c)))
    return str(event.id)


def outbox_rows(db: Database) -> list[dict[str, Any]]:
    with db.engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT * FROM outbox ORDER BY created_at, position, id")
        ).mappings()
        return [dict(r) for r in rows]


def unpublished(db: Database) -> int:
    with db.engine.connect() as connection:
        return int(
            connection.execute(
                sa.text("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            ).scalar_one()
        )


async def drain(relay: Relay, db: Database, timeout_s: float = 20.0) -> None:
    """Step the relay until the outbox has nothing unpublished (or fail after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while unpublished(db):
        if time.monotonic() > deadline:
            raise AssertionError(f"{unpublished(db)} events still unpublished")
        step = await relay.step()
        if not step.published:
            await asyncio.sleep(relay.policy.idle_poll_s)
