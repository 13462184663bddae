"""The accounts function: functions-framework entry point (target `accounts`).

Only adapts: every route, parse and error mapping is in holdfast.entrypoints.accounts.
"""

import functions_framework
from flask import Request, Response

from holdfast.entrypoints.accounts import api


@functions_framework.http
def accounts(request: Request) -> Response:
    return api(request)
