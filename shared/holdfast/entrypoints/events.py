"""Inbound CloudEvent plumbing shared by the functions: parse data, deliver once, reply."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from cloudevents.http import CloudEvent
from pydantic import BaseModel
from sqlalchemy.engine import Connection

from holdfast.domain.errors import BusinessError
from holdfast.entrypoints.runtime import Runtime
from holdfast.entrypoints.web import EventReply, HttpProblem, event_data, parse_model
from holdfast.services import events

M = TypeVar("M", bound=BaseModel)


def inbound(event: CloudEvent, subject: str) -> events.Inbound:
    return events.Inbound(
        source=str(event["source"]), id=str(event["id"]), type=str(event["type"]), subject=subject
    )


def parse(event: CloudEvent, model: type[M]) -> M:
    data = event_data(event)
    if not isinstance(data, dict):
        raise HttpProblem("malformed_request", "Malformed event data", "data must be a JSON object")
    return parse_model(model, data)


def handle(
    runtime: Runtime,
    event: CloudEvent,
    subject: str,
    effect: Callable[[Connection], BusinessError | None],
) -> EventReply:
    message = inbound(event, subject)
    delivered = events.deliver(runtime.db, message, effect)
    if delivered.rejection is None:
        return EventReply()
    return EventReply(reply=rejection_event(message, delivered.rejection))


def rejection_event(message: events.Inbound, rejection: dict[str, Any]) -> CloudEvent:
    return CloudEvent(
        {
            "type": events.rejection_type(message.type),
            "source": message.source,
            "id": events.rejection_event_id(message),
            "subject": message.subject,
            "datacontenttype": "application/json",
        },
        rejection,
    )
