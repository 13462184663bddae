"""The ledger function: functions-framework entry point (target `ledger`).

Only adapts: every route, parse and error mapping is in holdfast.entrypoints.ledger.
"""

import functions_framework
from flask import Request, Response
from werkzeug.exceptions import HTTPException

from holdfast.entrypoints import runtime
from holdfast.entrypoints.ledger import api
from holdfast.entrypoints.web import framework_error

# A key or setting this function needs and was not given stops it here, by name.
runtime.start("ledger")


@functions_framework.http
def ledger(request: Request) -> Response:
    return api(request)


# Answers functions-framework gives before our code runs (paths its URL map cannot match).
functions_framework.errorhandler(HTTPException)(framework_error)
