"""The transfers function: functions-framework entry point (target `transfers`).

Only adapts: every route, parse and error mapping is in holdfast.entrypoints.transfers.
"""

import functions_framework
from flask import Request, Response
from werkzeug.exceptions import HTTPException

from holdfast.entrypoints import runtime
from holdfast.entrypoints.transfers import api
from holdfast.entrypoints.web import framework_error

# A key or setting this function needs and was not given stops it here, by name.
runtime.start("transfers")


@functions_framework.http
def transfers(request: Request) -> Response:
    return api(request)


# Answers functions-framework gives before our code runs (paths its URL map cannot match).
functions_framework.errorhandler(HTTPException)(framework_error)
