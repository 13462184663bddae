"""The outbox relay's I/O: claiming rows under a lease, recording outcomes, pruning, and
publishing one row to `K_SINK` as a binary-mode CloudEvent.

Claim rule (ordering per subject). Unpublished rows are ordered by (created_at, position, id):
`created_at` is the writing transaction's `now()` and `position` the index within it. Two
transactions that change the same transfer or account both write its row, so under
SERIALIZABLE the later one to commit also started after the first committed (or it fails with
40001 and is retried with a new `now()`): for one subject, this order is commit order.

A row is *ready* when it is due (`next_attempt_at <= now`) and not leased (`lease_until` is
null or past). A claim takes, in that order, rows that are ready and whose earlier unpublished
rows of the same subject are all ready too (they are claimed in the same batch, since a batch
is a prefix of the order). So a relay never holds a later event of a subject while an earlier
one is leased elsewhere or waiting for its backoff, and sends a subject's rows one after the
other: per-subject order holds, across any number of relays.

Leases. A claim sets `lease_owner` to a token unique to that claim and `lease_until` to the
database's `now()` plus the lease. Claims run SERIALIZABLE, so two relays racing for the same
rows cannot both win (the loser gets 40001 and is retried by `Database.run`, then sees the
lease). Outcomes are written only by the token's holder; "published" is written only after a
2xx from the sink. A relay that dies after claiming leaves its lease to expire, and another
relay sends the rows: at least once, never lost; consumers deduplicate by `source` + `id`.

Invariants: rows are never deleted unless published (and older than the retention); a failed
row keeps its place and blocks later rows of its subject until it is sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import sqlalchemy as sa
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from opentelemetry import propagate, trace
from sqlalchemy.engine import Connection

from holdfast import limits, telemetry
from holdfast.adapters import tables as t
from holdfast.event_models import dataschema


@dataclass(frozen=True, slots=True)
class Claimed:
    """One outbox row held under a lease."""

    id: UUID
    type: str
    source: str
    subject: str
    data: dict[str, Any]
    traceparent: str | None
    created_at: datetime
    position: int
    attempts: int


@dataclass(frozen=True, slots=True)
class Failure:
    id: UUID
    error: str
    delay_s: float  # due again this long after the outcome is written


CLAIM = sa.text(
    """
    WITH pending AS (
        SELECT id, subject, created_at, position,
               (next_attempt_at <= :now AND (lease_until IS NULL OR lease_until <= :now))
                   AS ready
        FROM outbox
        WHERE published_at IS NULL
        ORDER BY created_at, position, id
        LIMIT :scan_max
    ),
    runs AS (
        SELECT id, created_at, position, ready,
               bool_and(ready) OVER (
                   PARTITION BY subject ORDER BY created_at, position, id
                   ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
               ) AS head_ready
        FROM pending
    ),
    chosen AS (
        SELECT id FROM runs WHERE head_ready
        ORDER BY created_at, position, id
        LIMIT :batch_max
    )
    UPDATE outbox
    SET lease_owner = :owner, lease_until = :until
    WHERE id IN (SELECT id FROM chosen)
      AND published_at IS NULL
      AND (lease_until IS NULL OR lease_until <= :now)
    RETURNING id, type, source, subject, data, traceparent, created_at, position, attempts
    """
)


def claim(
    connection: Connection,
    owner: str,
    now: datetime,
    lease_s: float,
    *,
    batch_max: int = limits.relay_batch_max,
    scan_max: int = limits.relay_claim_scan_max,
) -> list[Claimed]:
    """Lease up to `batch_max` sendable rows to `owner`, in publishing order."""
    rows = connection.execute(
        CLAIM,
        {
            "now": now,
            "until": now + timedelta(seconds=lease_s),
            "owner": owner,
            "batch_max": min(batch_max, limits.relay_batch_max),
            "scan_max": min(scan_max, limits.relay_claim_scan_max),
        },
    ).all()
    claimed = [
        Claimed(
            id=r.id,
            type=r.type,
            source=r.source,
            subject=r.subject,
            data=r.data,
            traceparent=r.traceparent,
            created_at=r.created_at,
            position=r.position,
            attempts=r.attempts,
        )
        for r in rows
    ]
    claimed.sort(key=lambda c: (c.created_at, c.position, str(c.id)))
    return claimed


def settle(
    connection: Connection,
    owner: str,
    at: datetime,
    *,
    published: Sequence[UUID],
    failed: Sequence[Failure],
    unsent: Sequence[UUID],
) -> None:
    """Write a batch's outcomes: published rows (a 2xx was seen: final, whoever holds the
    lease now), failed rows (attempts + 1, due again after their delay) and rows this claim did
    not get to (lease given back). Failures and releases only touch rows still leased to
    `owner`, so a relay whose lease ran out cannot disturb the next holder."""
    if published:
        connection.execute(
            t.outbox.update()
            .where(t.outbox.c.id.in_(published), t.outbox.c.published_at.is_(None))
            .values(published_at=at, lease_owner=None, lease_until=None, last_error=None)
        )
    for failure in failed:
        connection.execute(
            t.outbox.update()
            .where(t.outbox.c.id == failure.id, t.outbox.c.lease_owner == owner)
            .values(
                attempts=t.outbox.c.attempts + 1,
                next_attempt_at=at + timedelta(seconds=failure.delay_s),
                last_error=failure.error[: limits.relay_error_chars_max],
                lease_owner=None,
                lease_until=None,
            )
        )
    if unsent:
        connection.execute(
            t.outbox.update()
            .where(t.outbox.c.id.in_(unsent), t.outbox.c.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
        )


def prune(connection: Connection, before: datetime, batch_max: int) -> int:
    """Delete up to `batch_max` rows published before `before`; return how many."""
    doomed = (
        sa.select(t.outbox.c.id)
        .where(t.outbox.c.published_at.is_not(None), t.outbox.c.published_at < before)
        .limit(min(batch_max, limits.relay_prune_batch_max))
        .scalar_subquery()
    )
    result = connection.execute(t.outbox.delete().where(t.outbox.c.id.in_(doomed)))
    return int(result.rowcount or 0)


# -- publishing ---------------------------------------------------------------------------


def backlog(connection: Connection, now: datetime) -> tuple[int, float]:
    """How many events wait for publication, and the age in seconds of the oldest."""
    count, oldest = connection.execute(
        sa.select(sa.func.count(), sa.func.min(t.outbox.c.created_at)).where(
            t.outbox.c.published_at.is_(None)
        )
    ).one()
    return int(count), (now - oldest).total_seconds() if oldest is not None else 0.0


class PublishFailed(Exception):
    """The sink did not take the event (no 2xx): retried later with backoff."""


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def cloudevent(row: Claimed) -> CloudEvent:
    attributes: dict[str, Any] = {
        "id": str(row.id),
        "source": row.source,
        "type": row.type,
        "subject": row.subject,
        "time": rfc3339(row.created_at),
        "datacontenttype": "application/json",
        "dataschema": dataschema(row.type),
        "partitionkey": row.subject,
    }
    if row.traceparent:
        attributes["traceparent"] = row.traceparent
    return CloudEvent(attributes, row.data)


def binary_request(row: Claimed) -> tuple[dict[str, str], bytes]:
    """Headers and body of the binary-mode POST (the plain `traceparent` header too, for
    the HTTP hop's own tracing)."""
    headers, body = to_binary(cloudevent(row))
    if row.traceparent:
        headers["traceparent"] = row.traceparent
    return dict(headers), body if isinstance(body, bytes) else json.dumps(body).encode()


class HttpPublisher:
    """POSTs events to one sink URL; any answer but 2xx, and any transport error, fails.

    Keeps one connection pool per event loop (an httpx client cannot outlive its loop)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._loop = loop
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(limits.relay_send_timeout_s),
                limits=httpx.Limits(
                    max_connections=limits.relay_concurrency_max,
                    max_keepalive_connections=limits.relay_concurrency_max,
                ),
            )
        return self._client

    async def publish(self, row: Claimed, timeout_s: float) -> None:
        # A producer span continues the trace of the change that wrote the row; the event
        # carries the producer span on, so the consumer's span joins the same trace.
        parent = propagate.extract({"traceparent": row.traceparent}) if row.traceparent else None
        with telemetry.tracer().start_as_current_span(
            f"send {row.type}", context=parent, kind=trace.SpanKind.PRODUCER
        ) as span:
            span.set_attribute("cloudevents.event_id", str(row.id))
            span.set_attribute("cloudevents.event_type", row.type)
            span.set_attribute("cloudevents.event_subject", row.subject)
            sent = dataclasses.replace(row, traceparent=telemetry.current_traceparent())
            await self._post(sent if sent.traceparent else row, timeout_s)

    async def _post(self, row: Claimed, timeout_s: float) -> None:
        headers, body = binary_request(row)
        try:
            async with asyncio.timeout(timeout_s):
                response = await self.client().post(
                    self.url, headers=headers, content=body, timeout=timeout_s
                )
        except TimeoutError as error:
            raise PublishFailed(f"timeout after {timeout_s:g}s") from error
        except httpx.HTTPError as error:
            raise PublishFailed(f"{type(error).__name__}: {error}") from error
        if not 200 <= response.status_code < 300:
            raise PublishFailed(f"HTTP {response.status_code}: {response.text[:200]}")

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None
