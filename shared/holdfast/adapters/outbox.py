"""The transactional outbox and the inbox (deduplication of inbound events).

A state change and the event announcing it are written in the same transaction, so an event
is never lost and never sent for a rolled-back change. Event ids are derived from the subject
and the kind of change, so the same change always yields the same id. Every row carries a W3C
`traceparent`: the event's own, else the current OpenTelemetry span's, else a fresh random one
shared by the events of one `append` (one transaction, one trace). The relay
(`adapters.relay`, `services.relay`) publishes the rows; docs/events.md tells the whole design.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import sqlalchemy as sa
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy.engine import Connection

from holdfast.adapters import tables as t
from holdfast.adapters.repository import Writes

EVENT_NAMESPACE = uuid5(NAMESPACE_URL, "https://holdfast.dev/events")
# version 00: trace-id (not all zeros), parent-id (not all zeros), flags
TRACEPARENT = re.compile(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")
_propagator = TraceContextTextMapPropagator()


@dataclass(frozen=True, slots=True)
class OutboundEvent:
    type: str
    source: str
    subject: str
    data: dict[str, Any]
    traceparent: str | None = None
    key: str | None = None  # what makes the event unique, when type and subject do not

    @property
    def id(self) -> UUID:
        return uuid5(EVENT_NAMESPACE, self.key or f"{self.type}/{self.subject}")


def fresh_traceparent() -> str:
    """A new root trace context. Flagged sampled so that consumers sampling by parent keep it."""
    trace_id = secrets.randbits(128) or 1
    span_id = secrets.randbits(64) or 1
    return f"00-{trace_id:032x}-{span_id:016x}-01"


def current_traceparent() -> str:
    """The current OpenTelemetry span context as a traceparent, or a fresh one without one."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)  # writes nothing when there is no valid span context
    found = carrier.get("traceparent", "")
    return found if TRACEPARENT.match(found) else fresh_traceparent()


def append(connection: Connection, events: Sequence[OutboundEvent], at: datetime) -> None:
    """Add events to the outbox; one already there (same id) is left as it is."""
    writes = Writes()
    queue(writes, connection, events, at)
    writes.flush(connection)


def queue(
    writes: Writes, connection: Connection, events: Sequence[OutboundEvent], at: datetime
) -> None:
    """Queue the events with the rest of a unit of work's writes (one round trip for all)."""
    if not events:
        return
    traceparent = current_traceparent()
    rows = [
        {
            "id": event.id,
            "type": event.type,
            "source": event.source,
            "subject": event.subject,
            "data": event.data,
            "traceparent": event.traceparent or traceparent,
            "created_at": at,
            "position": position,
            "attempts": 0,
            "next_attempt_at": at,
            "lease_owner": None,
            "lease_until": None,
            "published_at": None,
            "last_error": None,
        }
        for position, event in enumerate(events)
    ]
    writes.insert(connection, t.outbox, rows, skip_existing=True)


def inbox_seen(connection: Connection, source: str, event_id: str) -> dict[str, Any] | None:
    """The stored reply of an event already processed, or None if it is new.

    The row is only written by `inbox_record` in the effect's own transaction, so a
    redelivery racing the first delivery loses on the primary key and is retried.
    """
    row = connection.execute(
        sa.select(t.inbox.c.reply).where(t.inbox.c.source == source, t.inbox.c.event_id == event_id)
    ).first()
    if row is None:
        return None
    reply: dict[str, Any] = row.reply or {}
    return reply


def inbox_record(
    connection: Connection,
    source: str,
    event_id: str,
    event_type: str,
    reply: dict[str, Any],
    at: datetime,
) -> None:
    connection.execute(
        t.inbox.insert().values(
            source=source, event_id=event_id, type=event_type, received_at=at, reply=reply
        )
    )
