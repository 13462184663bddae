"""The outbox side of a state change: stable ids and a W3C traceparent on every row."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from opentelemetry.sdk.trace import TracerProvider

from holdfast.adapters import outbox, repository
from holdfast.adapters.database import Database
from tests.conftest import Api
from tests.integration.events.conftest import cloudevent, outbox_rows, post_event
from tests.integration.helpers import funded, open_account


def append(db: Database, *events: outbox.OutboundEvent) -> None:
    db.run(lambda c: outbox.append(c, list(events), repository.now(c)))


def event(
    subject: str, kind: str = "changed", traceparent: str | None = None
) -> outbox.OutboundEvent:
    return outbox.OutboundEvent(
        f"dev.holdfast.test.{kind}.v1", "/tests", subject, {"s": subject}, traceparent
    )


def traceparents(db: Database) -> dict[str, str]:
    return {r["subject"]: r["traceparent"] for r in outbox_rows(db)}


def test_without_a_span_each_transaction_gets_a_fresh_valid_traceparent(db: Database) -> None:
    append(db, event("a"), event("b"))
    append(db, event("c"))
    found = traceparents(db)
    assert all(outbox.TRACEPARENT.match(v) for v in found.values())
    assert found["a"] == found["b"], "one transaction, one trace"
    assert found["a"].split("-")[1] != found["c"].split("-")[1], "another transaction, another"


def test_the_current_span_context_is_carried(db: Database) -> None:
    tracer = TracerProvider().get_tracer("tests")
    with tracer.start_as_current_span("reserve") as span:
        append(db, event("a"))
        context = span.get_span_context()
    _version, trace_id, _parent_id, flags = traceparents(db)["a"].split("-")
    # The span itself, or (when tracing is on) the unit of work's span inside it.
    assert trace_id == f"{context.trace_id:032x}"
    assert int(flags, 16) & 1, "sampled"


def test_an_event_s_own_traceparent_is_kept(db: Database) -> None:
    own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    append(db, event("a", traceparent=own), event("b"))
    found = traceparents(db)
    assert found["a"] == own and found["b"] != own


def test_an_inbound_event_s_trace_reaches_the_events_it_causes(
    accounts_api: Api, db: Database
) -> None:
    trace_id = uuid.uuid4().hex
    inbound = cloudevent(
        "dev.holdfast.account.open.v1", {"id": str(uuid.uuid4()), "currency": "EUR", "owner": "x"}
    )
    inbound["traceparent"] = f"00-{trace_id}-00f067aa0ba902b7-01"
    assert post_event(accounts_api, inbound).status_code == 200
    (row,) = outbox_rows(db)
    assert row["traceparent"].split("-")[1] == trace_id


def test_ids_are_stable_and_an_event_is_written_once(db: Database) -> None:
    first = event("a")
    assert first.id == event("a").id != event("b").id
    append(db, first)
    append(db, event("a"))
    assert [r["id"] for r in outbox_rows(db)] == [first.id]


def test_every_state_change_writes_its_event_in_its_own_transaction(
    accounts_api: Api, transfers_api: Api, db: Database
) -> None:
    alice = funded(accounts_api, transfers_api, 1_000)
    open_account(accounts_api, owner="bob")
    with db.engine.connect() as c:
        rows = c.execute(sa.text("SELECT type, count(*) FROM outbox GROUP BY type")).all()
    assert dict(rows) == {
        "dev.holdfast.account.opened.v1": 3,
        "dev.holdfast.transfer.confirmed.v1": 1,
    }
    assert alice
