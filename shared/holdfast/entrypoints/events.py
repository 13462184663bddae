"""Inbound CloudEvent plumbing shared by the functions: parse data, deliver once, reply.

Also the catalogue of every event type's `data` schema (inbound request models and the
outbound models of `holdfast.event_models`), from which `schemas/events/*.json` is generated:

    .venv/bin/python -m holdfast.entrypoints.events schemas/events
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from cloudevents.http import CloudEvent
from opentelemetry import context as otel_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import BaseModel
from sqlalchemy.engine import Connection

from holdfast import event_models
from holdfast.domain.errors import BusinessError
from holdfast.entrypoints.runtime import Runtime
from holdfast.entrypoints.schemas import AccountIn, CancelEventIn, ConfirmEventIn, ReserveIn
from holdfast.entrypoints.web import EventReply, HttpProblem, event_data, parse_model
from holdfast.services import events

M = TypeVar("M", bound=BaseModel)
C_co = TypeVar("C_co", covariant=True)

INBOUND: dict[str, type[BaseModel]] = {
    "dev.holdfast.account.open.v1": AccountIn,
    "dev.holdfast.transfer.reserve.v1": ReserveIn,
    "dev.holdfast.transfer.confirm.v1": ConfirmEventIn,
    "dev.holdfast.transfer.cancel.v1": CancelEventIn,
}
_propagator = TraceContextTextMapPropagator()


def inbound(event: CloudEvent, subject: str) -> events.Inbound:
    return events.Inbound(
        source=str(event["source"]), id=str(event["id"]), type=str(event["type"]), subject=subject
    )


def parse(event: CloudEvent, model: type[M]) -> M:
    """The event's data as `model`, or a 400 problem: an event whose data does not fit is
    malformed (Knative sends it to the dead-letter sink rather than retrying it)."""
    data = event_data(event)
    if not isinstance(data, dict):
        raise HttpProblem("malformed_request", "Malformed event data", "data must be a JSON object")
    try:
        return parse_model(model, data)
    except HttpProblem as error:
        extra = {k: v for k, v in error.body.items() if k == "errors"}
        raise HttpProblem(
            "malformed_request", "Malformed event data", str(error.body["detail"]), **extra
        ) from error


class Commanding(Protocol[C_co]):
    def command(self) -> C_co: ...


def command(event: CloudEvent, model: type[Commanding[C_co]]) -> C_co:
    """The event's data as a domain command; data the domain refuses (a leg that debits and
    credits one account) makes the event malformed too: 400, not a business answer."""
    parsed: Commanding[C_co] = parse(event, model)  # type: ignore[type-var]
    try:
        return parsed.command()
    except BusinessError as error:
        raise HttpProblem("malformed_request", "Malformed event data", error.detail) from error


def handle(
    runtime: Runtime,
    event: CloudEvent,
    subject: str,
    effect: Callable[[Connection], BusinessError | None],
) -> EventReply:
    message = inbound(event, subject)
    with trace_context(event):
        delivered = events.deliver(runtime.db, message, effect)
    if delivered.rejection is None:
        return EventReply()
    return EventReply(reply=rejection_event(message, delivered.rejection, event))


@contextlib.contextmanager
def trace_context(event: CloudEvent) -> Iterator[None]:
    """Make the inbound event's `traceparent` the current trace context, so the events its
    effect writes to the outbox carry the same trace."""
    traceparent = event.get("traceparent")
    if not traceparent:
        yield
        return
    carrier = {"traceparent": str(traceparent)}
    if event.get("tracestate"):
        carrier["tracestate"] = str(event.get("tracestate"))
    token = otel_context.attach(_propagator.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


def rejection_event(
    message: events.Inbound, rejection: dict[str, Any], cause: CloudEvent | None = None
) -> CloudEvent:
    """The reply to a refused event: the same id, source and data as its outbox row."""
    kind = events.rejection_type(message.type)
    attributes = {
        "type": kind,
        "source": message.source,
        "id": events.rejection_event_id(message),
        "subject": message.subject,
        "datacontenttype": "application/json",
        "dataschema": event_models.dataschema(kind),
        "partitionkey": message.subject,
    }
    if cause is not None and cause.get("traceparent"):
        attributes["traceparent"] = str(cause.get("traceparent"))
    return CloudEvent(attributes, rejection)


# -- data schemas -------------------------------------------------------------------------


def data_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of the `data` of every event type Holdfast takes or sends."""
    models = {**INBOUND, **event_models.OUTBOUND}
    return {kind: event_models.json_schema(kind, model) for kind, model in sorted(models.items())}


def write_data_schemas(directory: Path) -> list[Path]:
    """Write `<type>.json` for every event type (and remove no other file)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, document in data_schemas().items():
        path = directory / f"{kind}.json"
        path.write_text(event_models.render(document))
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_data_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        print(written_path)
