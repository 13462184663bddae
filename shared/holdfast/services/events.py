"""Inbound CloudEvents: at-least-once delivery, in any order, with exactly one effect.

`deliver` runs the effect and records `source` + `id` in the inbox in one transaction. A
redelivery finds the record and gets the first reply back; a concurrent duplicate loses the
race on the inbox key and, retried, finds it. A business rejection is a processed event too:
it is recorded, announced through the outbox, and answered with a rejection reply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from holdfast.adapters import outbox, repository
from holdfast.adapters.database import Database
from holdfast.domain.errors import BusinessError


@dataclass(frozen=True, slots=True)
class Inbound:
    source: str
    id: str
    type: str
    subject: str  # the account or transfer the event is about


@dataclass(frozen=True, slots=True)
class Delivered:
    """The reply: `rejection` is set when the effect was refused by a business rule."""

    rejection: dict[str, Any] | None
    duplicate: bool


def rejection_type(event_type: str) -> str:
    kind = "account" if event_type.startswith("dev.holdfast.account.") else "transfer"
    return f"dev.holdfast.{kind}.rejected.v1"


def deliver(
    db: Database, inbound: Inbound, effect: Callable[[Connection], BusinessError | None]
) -> Delivered:
    def work(connection: Connection) -> Delivered:
        seen = outbox.inbox_seen(connection, inbound.source, inbound.id)
        if seen is not None:
            return Delivered(seen.get("rejection"), duplicate=True)
        at = repository.now(connection)
        error = effect(connection)
        rejection = None
        if error is not None:
            rejection = {
                "id": inbound.subject,
                "code": error.code,
                "title": error.title,
                "detail": error.detail,
                "event": {"source": inbound.source, "id": inbound.id, "type": inbound.type},
            }
            outbox.append(
                connection,
                [
                    outbox.OutboundEvent(
                        type=rejection_type(inbound.type),
                        source=inbound.source,
                        subject=inbound.subject,
                        data=rejection,
                        key=f"rejected/{inbound.source}/{inbound.id}",
                    )
                ],
                at,
            )
        outbox.inbox_record(
            connection, inbound.source, inbound.id, inbound.type, {"rejection": rejection}, at
        )
        return Delivered(rejection, duplicate=False)

    return db.run(work)


def rejection_event_id(inbound: Inbound) -> str:
    return str(
        outbox.OutboundEvent("", "", "", {}, key=f"rejected/{inbound.source}/{inbound.id}").id
    )
