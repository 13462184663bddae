"""The ledger function: functions-framework entry point (target `ledger`).

Only adapts: every route, parse and error mapping is in holdfast.entrypoints.ledger.
"""

import functions_framework
from flask import Request, Response

from holdfast.entrypoints.ledger import api


@functions_framework.http
def ledger(request: Request) -> Response:
    return api(request)
