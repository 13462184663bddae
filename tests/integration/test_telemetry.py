"""Observability: one transfer's trace, the metrics an operator scrapes, and clean logs."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from holdfast import telemetry
from tests.conftest import Api
from tests.integration.helpers import funded, open_account

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"

_exporter = InMemorySpanExporter()
telemetry.add_span_processor(SimpleSpanProcessor(_exporter))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _exporter.clear()
    yield _exporter
    _exporter.clear()


def test_one_transfer_is_one_trace_from_request_to_outbox(
    accounts_api: Api, transfers_api: Api, spans: InMemorySpanExporter, db
) -> None:
    alice = funded(accounts_api, transfers_api, 1_000)
    bob = open_account(accounts_api, owner="bob")
    spans.clear()
    injected_before = db.faults.injected if db.faults is not None else 0
    transfer_id = str(uuid.uuid4())
    response = transfers_api.call(
        "POST",
        "/v1/transfers",
        {
            "id": transfer_id,
            "debit_account_id": alice,
            "credit_account_id": bob,
            "amount": 10,
            "currency": "EUR",
        },
        headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
    )
    assert response.status_code == 201
    finished = spans.get_finished_spans()
    server = next(s for s in finished if s.name == "POST /v1/transfers")
    # The server span joins the caller's trace, as a child of the caller's span.
    assert format(server.context.trace_id, "032x") == CALLER_TRACE
    assert server.parent is not None and format(server.parent.span_id, "016x") == CALLER_SPAN
    assert server.kind is trace.SpanKind.SERVER
    assert server.attributes["holdfast.transfer.id"] == transfer_id
    assert server.attributes["holdfast.transfer.state"] == "reserved"
    assert server.attributes["http.response.status_code"] == 201
    # The unit of work is its child, and every SQL statement a child of the unit of work.
    transaction = next(s for s in finished if s.name == "db.transaction")
    assert transaction.parent is not None and transaction.parent.span_id == server.context.span_id
    # One attempt, and one more for each 40001 the fault pass injected meanwhile.
    injected = (db.faults.injected if db.faults is not None else 0) - injected_before
    assert transaction.attributes["holdfast.db.attempts"] == 1 + injected
    assert [e.name for e in transaction.events].count("retry") == injected
    statements = [
        s
        for s in finished
        if s.parent is not None and s.parent.span_id == transaction.context.span_id
    ]
    # Each attempt is two pipelines: the locking reads (they go out with BEGIN), then every
    # write (they go out with COMMIT).
    assert [s.name for s in statements] == ["db.pipeline"] * 2 * (1 + injected)
    reads, writes = (str(s.attributes["db.statement"]) for s in statements[-2:])
    assert "FROM transfers" in reads and "FOR UPDATE" in reads
    assert "INSERT INTO transfers" in writes and "INSERT INTO outbox" in writes
    assert all(s.context.trace_id == server.context.trace_id for s in statements)
    # No amount, owner or token in any attribute.
    for span in finished:
        for value in (span.attributes or {}).values():
            assert "alice" not in str(value) and "Bearer" not in str(value)
    # The outbox row carries the request's trace: the outbound event will continue it.
    with db.engine.connect() as c:
        traceparent = c.execute(
            sa.text(
                "SELECT traceparent FROM outbox WHERE subject = :s AND type = 'dev.holdfast.transfer.reserved.v1'"
            ),
            {"s": transfer_id},
        ).scalar_one()
    _, trace_id, parent_span, _ = traceparent.split("-")
    assert trace_id == CALLER_TRACE
    assert parent_span == format(server.context.span_id, "016x")


def test_an_inbound_event_continues_its_senders_trace(
    accounts_api: Api, transfers_api: Api, spans: InMemorySpanExporter
) -> None:
    response = transfers_api.client.post(
        "/",
        headers={
            "ce-specversion": "1.0",
            "ce-type": "dev.holdfast.transfer.cancel.v1",
            "ce-source": "/test",
            "ce-id": str(uuid.uuid4()),
            "ce-traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
            "content-type": "application/json",
        },
        data=json.dumps({"id": str(uuid.uuid4())}),
    )
    assert response.status_code == 200
    server = next(s for s in spans.get_finished_spans() if s.name == "POST / (CloudEvent)")
    assert format(server.context.trace_id, "032x") == CALLER_TRACE
    assert server.attributes["cloudevents.event_type"] == "dev.holdfast.transfer.cancel.v1"


def test_retries_show_on_the_transaction_span(
    transfers_api: Api, accounts_api: Api, spans, make_db
) -> None:
    from holdfast.adapters.database import FaultInjector
    from holdfast.domain.accounts import NormalBalance, OpenAccount
    from holdfast.domain.actors import SYSTEM
    from holdfast.services import accounts

    flaky = make_db(pool_size=1, faults=False)
    flaky.faults, flaky.attempts_max = FaultInjector(1.0), 3
    with pytest.raises(Exception, match="injected"):
        accounts.open_account(
            flaky, OpenAccount(uuid.uuid4(), "EUR", "x", NormalBalance.CREDIT, 0, {}), SYSTEM
        )
    transaction = next(s for s in spans.get_finished_spans() if s.name == "db.transaction")
    assert transaction.attributes["holdfast.db.attempts"] == 3
    assert [e.name for e in transaction.events][:2] == ["retry", "retry"]


def test_metrics_are_served_for_prometheus(accounts_api: Api, transfers_api: Api) -> None:
    telemetry.configure("transfers", logs=False)
    alice = funded(accounts_api, transfers_api, 100)
    bob = open_account(accounts_api, owner="bob")
    refused = transfers_api.call(
        "POST",
        "/v1/transfers",
        {
            "id": str(uuid.uuid4()),
            "debit_account_id": alice,
            "credit_account_id": bob,
            "amount": 1_000,
            "currency": "EUR",
        },
    )
    assert refused.json["code"] == "insufficient_funds"
    scraped = transfers_api.client.get("/metrics")
    assert scraped.status_code == 200
    text = scraped.get_data(as_text=True)
    assert "holdfast_transfers_total{" in text
    assert 'outcome="insufficient_funds"' in text and 'operation="reserve"' in text
    assert "holdfast_http_server_request_duration_seconds_bucket" in text
    assert "alice" not in text


def test_logs_are_json_with_trace_ids_and_no_secrets(
    accounts_api: Api, transfers_api: Api, issuer, runtime
) -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(telemetry.JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    token = issuer.issue("alice", "accounts:read accounts:write transfers:write")
    try:
        secret_name = "Alice Example, 1 Secret Street"
        account_id = str(uuid.uuid4())
        accounts_api.call(
            "POST",
            "/v1/accounts",
            {
                "id": account_id,
                "currency": "EUR",
                "owner": "alice",
                "metadata": {"name": secret_name},
            },
        )
        accounts_api.client.get(
            f"/v1/accounts/{account_id}", headers={"Authorization": "Bearer " + token + "x"}
        )
        accounts_api.client.get(
            f"/v1/accounts/{account_id}", headers={"Authorization": "Bearer " + token}
        )
        runtime.db.engine.dispose()
        with telemetry.tracer().start_as_current_span("probe"):
            logging.getLogger("holdfast.test").warning("inside a span")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    assert lines, "nothing was logged"
    text = buffer.getvalue()
    assert token not in text and token[:40] not in text
    assert secret_name not in text
    inside = next(line for line in lines if line["message"] == "inside a span")
    assert len(inside["trace_id"]) == 32 and len(inside["span_id"]) == 16


def test_the_trace_reaches_the_outbound_event_and_its_consumer(
    accounts_api: Api, transfers_api: Api, spans: InMemorySpanExporter, db
) -> None:
    import asyncio

    from holdfast.adapters.relay import HttpPublisher
    from holdfast.services.relay import Relay
    from tests.integration.events.conftest import Sink

    alice = funded(accounts_api, transfers_api, 1_000)
    bob = open_account(accounts_api, owner="bob")
    spans.clear()
    transfer_id = str(uuid.uuid4())
    transfers_api.call(
        "POST",
        "/v1/transfers",
        {
            "id": transfer_id,
            "debit_account_id": alice,
            "credit_account_id": bob,
            "amount": 10,
            "currency": "EUR",
        },
        headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
    )
    server = next(s for s in spans.get_finished_spans() if s.name == "POST /v1/transfers")
    sink = Sink().start()
    publisher = HttpPublisher(sink.url)

    async def relay_once() -> None:
        try:
            while (await Relay(db, publisher).step()).claimed:
                pass
        finally:
            await publisher.aclose()

    try:
        asyncio.run(relay_once())
    finally:
        sink.stop()
    reserved = next(
        r
        for r in sink.accepted()
        if r.subject == transfer_id and r.headers["ce-type"].endswith("reserved.v1")
    )
    producer = next(
        s
        for s in spans.get_finished_spans()
        if s.name == "send dev.holdfast.transfer.reserved.v1"
        and s.attributes["cloudevents.event_subject"] == transfer_id
    )
    # request -> (outbox) -> producer span -> the event's traceparent
    assert producer.kind is trace.SpanKind.PRODUCER
    assert producer.parent is not None and producer.parent.span_id == server.context.span_id
    _, trace_id, span_id, _ = reserved.headers["ce-traceparent"].split("-")
    assert (trace_id, span_id) == (CALLER_TRACE, format(producer.context.span_id, "016x"))
    # A consumer that receives the event joins the same trace, under the producer span.
    spans.clear()
    consumed = transfers_api.client.post(
        "/",
        headers={
            "ce-specversion": "1.0",
            "ce-type": "dev.holdfast.transfer.cancel.v1",
            "ce-source": "/consumer",
            "ce-id": str(uuid.uuid4()),
            "ce-traceparent": reserved.headers["ce-traceparent"],
            "content-type": "application/json",
        },
        data=json.dumps({"id": transfer_id}),
    )
    assert consumed.status_code == 200
    consumer = next(s for s in spans.get_finished_spans() if s.name == "POST / (CloudEvent)")
    assert format(consumer.context.trace_id, "032x") == CALLER_TRACE
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
