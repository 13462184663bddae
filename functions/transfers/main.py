"""The transfers function: functions-framework entry point (target `transfers`).

Only adapts: every route, parse and error mapping is in holdfast.entrypoints.transfers.
"""

import functions_framework
from flask import Request, Response

from holdfast.entrypoints.transfers import api


@functions_framework.http
def transfers(request: Request) -> Response:
    return api(request)
