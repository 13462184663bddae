"""The transfers function: TCC over HTTP and CloudEvents, the batch endpoint, the sweep."""

from __future__ import annotations

from typing import Any

from cloudevents.http import CloudEvent
from sqlalchemy.engine import Connection

from holdfast.domain.actors import SYSTEM
from holdfast.domain.errors import BusinessError
from holdfast.domain.transfers import CancelCommand, Command, ConfirmCommand, State
from holdfast.entrypoints import events, pages
from holdfast.entrypoints.problems import from_business_error
from holdfast.entrypoints.runtime import Runtime
from holdfast.entrypoints.schemas import (
    BatchIn,
    CancelEventIn,
    ConfirmEventIn,
    ConfirmIn,
    ReserveIn,
)
from holdfast.entrypoints.web import (
    Api,
    Call,
    EventReply,
    HttpProblem,
    Reply,
    Route,
    parse_model,
)
from holdfast.services import transfers
from holdfast.services.views import transfer_view

SUCCESS_STATUS = {"reserve": 201, "confirm": 200, "cancel": 200}


def result(outcome: transfers.Outcome) -> tuple[int, dict[str, Any]]:
    if outcome.error is not None:
        return from_business_error(outcome.error)
    if outcome.answer is None:
        raise ValueError("an outcome has an answer or an error")
    return SUCCESS_STATUS[outcome.answer.operation], outcome.body()


def run_one(call: Call, command: Command) -> Reply:
    outcome = transfers.execute(call.runtime.db, [transfers.Operation(command, call.actor)])[0]
    if outcome.error is not None:
        raise outcome.error
    return Reply(*result(outcome))


def reserve(call: Call) -> Reply:
    return run_one(call, call.body(ReserveIn).command())


def confirm(call: Call) -> Reply:
    body = call.body(ConfirmIn, empty_ok=True)
    return run_one(call, ConfirmCommand(call.args["transfer_id"], body.amount))


def cancel(call: Call) -> Reply:
    call.json(empty_ok=True)  # an optional empty object; anything else is still parsed
    return run_one(call, CancelCommand(call.args["transfer_id"]))


def get_transfer(call: Call) -> Reply:
    transfer, at = transfers.get_transfer(call.runtime.db, call.args["transfer_id"], call.actor)
    return Reply(200, transfer_view(transfer, at))


def list_transfers(call: Call) -> Reply:
    query = call.request.args
    raw_state = query.get("state")
    if raw_state is not None and raw_state not in {s.value for s in State}:
        raise HttpProblem("validation_error", "Invalid input", "state is not a transfer state")
    limit = pages.limit(query)
    page, at = transfers.list_transfers(
        call.runtime.db,
        call.actor,
        account_id=pages.uuid_param(query, "account_id"),
        state=State(raw_state) if raw_state else None,
        after=pages.decode_time_cursor(query.get("after")),
        limit=limit,
    )
    last = page[-1] if len(page) == limit else None
    return Reply(
        200,
        {
            "transfers": [transfer_view(x, at) for x in page],
            "next": pages.encode_time_cursor(last.created_at, last.id) if last else None,
        },
    )


def batch(call: Call) -> Reply:
    envelope = call.body(BatchIn)
    parsed: list[Command | HttpProblem] = [_operation(raw) for raw in envelope.operations]
    valid = [transfers.Operation(c, call.actor) for c in parsed if not isinstance(c, HttpProblem)]
    outcomes = iter(transfers.execute(call.runtime.db, valid) if valid else [])
    results = []
    for item in parsed:
        if isinstance(item, HttpProblem):
            results.append(item.body)
        else:
            results.append(result(next(outcomes))[1])
    return Reply(200, {"results": results})


def _operation(raw: dict[str, Any]) -> Command | HttpProblem:
    fields = {k: v for k, v in raw.items() if k != "op"}
    try:
        match raw.get("op"):
            case "reserve":
                return parse_model(ReserveIn, fields).command()
            case "confirm":
                return parse_model(ConfirmEventIn, fields).command()
            case "cancel":
                return parse_model(CancelEventIn, fields).command()
            case _:
                return HttpProblem(
                    "validation_error", "Invalid input", "op must be reserve, confirm or cancel"
                )
    except HttpProblem as problem:
        return problem
    except BusinessError as error:
        return HttpProblem(error.code, error.title, error.detail)


# -- CloudEvents ------------------------------------------------------------------------


def on_operation(runtime: Runtime, event: CloudEvent, command: Command) -> EventReply:
    operations = [transfers.Operation(command, SYSTEM)]
    last: list[transfers.Outcome] = []

    def effect(connection: Connection) -> BusinessError | None:
        last[:] = transfers.apply(connection, operations, runtime.db.cipher)
        return last[0].error

    reply = events.handle(runtime, event, str(command.id), effect)
    if last:  # empty when the event was a duplicate: nothing happened this time
        transfers.observe(operations, last)
    return reply


def on_reserve(runtime: Runtime, event: CloudEvent) -> EventReply:
    return on_operation(runtime, event, events.command(event, ReserveIn))


def on_confirm(runtime: Runtime, event: CloudEvent) -> EventReply:
    return on_operation(runtime, event, events.command(event, ConfirmEventIn))


def on_cancel(runtime: Runtime, event: CloudEvent) -> EventReply:
    return on_operation(runtime, event, events.command(event, CancelEventIn))


def on_tick(runtime: Runtime, event: CloudEvent) -> EventReply:
    """The PingSource's tick: sweep lapsed reservations (bounded batches, at most 10)."""
    for _ in range(10):
        if transfers.sweep_expired(runtime.db) == 0:
            break
    transfers.measure_lapsed(runtime.db)
    return EventReply()


api = Api(
    "transfers",
    [
        Route("/v1/transfers", ("POST",), "transfers:write", reserve),
        Route("/v1/transfers", ("GET",), "transfers:read", list_transfers),
        Route("/v1/transfers:batch", ("POST",), "transfers:write", batch),
        Route("/v1/transfers/<uuid:transfer_id>", ("GET",), "transfers:read", get_transfer),
        Route("/v1/transfers/<uuid:transfer_id>/confirm", ("POST",), "transfers:write", confirm),
        Route("/v1/transfers/<uuid:transfer_id>/cancel", ("POST",), "transfers:write", cancel),
    ],
    events={
        "dev.holdfast.transfer.reserve.v1": on_reserve,
        "dev.holdfast.transfer.confirm.v1": on_confirm,
        "dev.holdfast.transfer.cancel.v1": on_cancel,
        "dev.knative.sources.ping": on_tick,
    },
)
