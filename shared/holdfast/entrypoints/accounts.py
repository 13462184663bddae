"""The accounts function: HTTP routes and the account.open CloudEvent."""

from __future__ import annotations

from typing import Literal

from cloudevents.http import CloudEvent
from sqlalchemy.engine import Connection

from holdfast.domain.actors import SYSTEM
from holdfast.domain.errors import BusinessError
from holdfast.entrypoints import events
from holdfast.entrypoints.runtime import Runtime
from holdfast.entrypoints.schemas import AccountIn
from holdfast.entrypoints.web import Api, Call, EventReply, Reply, Route
from holdfast.services import accounts
from holdfast.services.views import account_view


def open_account(call: Call) -> Reply:
    opened = accounts.open_account(call.runtime.db, call.body(AccountIn).command(), call.actor)
    return Reply(201, account_view(opened.account))


def get_account(call: Call) -> Reply:
    account = accounts.get_account(call.runtime.db, call.args["account_id"], call.actor)
    return Reply(200, account_view(account))


def status_change(action: Literal["freeze", "unfreeze", "close"]) -> Route:
    def handler(call: Call) -> Reply:
        account = accounts.change_status(
            call.runtime.db, call.args["account_id"], action, call.actor
        )
        return Reply(200, account_view(account))

    return Route(f"/v1/accounts/<uuid:account_id>/{action}", ("POST",), "accounts:write", handler)


def on_open(runtime: Runtime, event: CloudEvent) -> EventReply:
    command = events.command(event, AccountIn)

    def effect(connection: Connection) -> BusinessError | None:
        try:
            accounts.open_in(connection, command, SYSTEM, runtime.db.cipher)
        except BusinessError as error:
            return error
        return None

    return events.handle(runtime, event, str(command.id), effect)


api = Api(
    "accounts",
    [
        Route("/v1/accounts", ("POST",), "accounts:write", open_account),
        Route("/v1/accounts/<uuid:account_id>", ("GET",), "accounts:read", get_account),
        status_change("freeze"),
        status_change("unfreeze"),
        status_change("close"),
    ],
    events={"dev.holdfast.account.open.v1": on_open},
)
