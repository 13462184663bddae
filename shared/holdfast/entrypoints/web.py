"""The thin HTTP and CloudEvents adapter shared by the three functions.

`Api(request)` is what a function's `main.py` hands functions-framework. It routes by path,
checks the bearer token and scope, parses JSON into request models, calls one handler and
maps its answer or error to a response:

    GET  /healthz, /readyz              no token (probes)
    POST /                              CloudEvents (binary or structured), trusted network
    *    /v1/...                        bearer token + scope, problem+json on error
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import prometheus_client
import sqlalchemy as sa
from cloudevents import exceptions as ce_exceptions
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent, from_http
from opentelemetry import propagate, trace
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from holdfast import limits, telemetry
from holdfast.domain.actors import Actor
from holdfast.domain.errors import BusinessError, TransientError, Unauthorized
from holdfast.entrypoints import runtime as runtime_module
from holdfast.entrypoints.problems import from_business_error, problem
from holdfast.entrypoints.runtime import Runtime

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})
METRICS_MIMETYPE = prometheus_client.CONTENT_TYPE_LATEST.split(";")[0]

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Strict-Transport-Security": "max-age=63072000",
}


class HttpProblem(Exception):
    """An error detected by the adapter itself (bad JSON, missing scope, too large)."""

    def __init__(self, code: str, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.body = problem(code, title, detail, **extra)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)
    # A streamed answer (the ledger export): chunks of bytes instead of a JSON body.
    stream: Iterable[bytes] | None = None
    mimetype: str = "application/json"


@dataclass(frozen=True, slots=True)
class Call:
    request: Request
    runtime: Runtime
    actor: Actor
    args: Mapping[str, Any]

    def body(self, model: type[M], *, empty_ok: bool = False) -> M:
        return parse_model(model, self.json(empty_ok=empty_ok))

    def json(self, *, empty_ok: bool = False) -> Any:
        raw = self.request.get_data(cache=True)
        if not raw.strip():
            if empty_ok:
                return {}
            raise HttpProblem("malformed_request", "Malformed request", "a JSON body is required")
        return parse_json(raw)


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:  # deep nesting too
        raise HttpProblem(
            "malformed_request", "Malformed JSON", f"the body is not JSON: {error}"
        ) from error


def parse_model(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise HttpProblem(
            "validation_error",
            "Invalid input",
            "; ".join(_describe(e) for e in error.errors()[:10]),
            errors=[
                {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                for e in error.errors(include_url=False, include_input=False)
            ],
        ) from error


def _describe(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "body"
    return f"{where}: {error['msg']}"


@dataclass(frozen=True, slots=True)
class Route:
    rule: str
    methods: tuple[str, ...]
    scope: str
    handler: Callable[[Call], Reply]


@dataclass(frozen=True, slots=True)
class EventReply:
    """How a CloudEvent was answered: 200 with an optional reply event."""

    reply: CloudEvent | None = None


EventHandler = Callable[[Runtime, CloudEvent], EventReply]


class Api:
    def __init__(
        self,
        name: str,
        routes: list[Route],
        events: Mapping[str, EventHandler] | None = None,
    ) -> None:
        self.name = name
        self.routes = {f"{r.rule} {m}": r for r in routes for m in r.methods}
        self.url_map = Map([Rule(r.rule, methods=list(r.methods), endpoint=r.rule) for r in routes])
        self.events = dict(events or {})

    def runtime(self) -> Runtime:
        return runtime_module.current(self.name)

    def __call__(self, request: Request) -> Response:
        if request.path in UNTRACED:
            return self._answer(request)
        started = time.perf_counter()
        headers = {k.lower(): v for k, v in request.headers.items()}
        if "traceparent" not in headers and "ce-traceparent" in headers:
            headers["traceparent"] = headers["ce-traceparent"]  # binary-mode CloudEvent
        name = self._span_name(request)
        with telemetry.tracer().start_as_current_span(
            name, context=propagate.extract(headers), kind=trace.SpanKind.SERVER
        ) as span:
            span.set_attribute("http.request.method", request.method)
            span.set_attribute("faas.name", self.name)
            response = self._answer(request)
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_status(trace.StatusCode.ERROR)
        telemetry.instruments().request_duration.record(
            time.perf_counter() - started,
            {"function": self.name, "route": name, "status": str(response.status_code)},
        )
        return response

    def _span_name(self, request: Request) -> str:
        if request.path == "/" and request.method == "POST":
            return "POST / (CloudEvent)"
        try:
            endpoint, _ = self.url_map.bind("holdfast", path_info=request.path).match(
                method=request.method
            )
        except (NotFound, MethodNotAllowed):
            return f"{request.method} (unmatched)"
        return f"{request.method} {endpoint}"

    def _answer(self, request: Request) -> Response:
        response = self._answer_unsecured(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def _answer_unsecured(self, request: Request) -> Response:
        try:
            return self._dispatch(request)
        except HttpProblem as error:
            headers = {}
            if "retry_after_s" in error.body:
                headers["Retry-After"] = str(max(1, round(error.body["retry_after_s"])))
            if "allow" in error.body:
                headers["Allow"] = ", ".join(error.body["allow"])
            return json_response(error.status, error.body, problem_json=True, headers=headers)
        except BusinessError as error:
            return json_response(*from_business_error(error), problem_json=True)
        except Unauthorized as error:
            status, body = problem("unauthorized", "Unauthorized", str(error))
            return json_response(
                status, body, problem_json=True, headers={"WWW-Authenticate": "Bearer"}
            )
        except TransientError as error:
            log.warning("transient failure after retries: %s", error)
            status, body = problem("unavailable", "Try again", "the database is busy; retry")
            return json_response(status, body, problem_json=True, headers={"Retry-After": "1"})
        except Exception:
            # A broken invariant or a bug: the transaction rolled back; fail loudly, say little.
            log.exception("unhandled error in %s %s", request.method, request.path)
            status, body = problem("internal_error", "Internal error", "the request failed")
            return json_response(status, body, problem_json=True)

    def _dispatch(self, request: Request) -> Response:
        path = request.path
        if path == "/healthz":
            return json_response(200, {"status": "ok"})
        if path == "/readyz":
            return self._ready()
        if path == "/metrics":
            return Response(prometheus_client.generate_latest(), mimetype=METRICS_MIMETYPE)
        if path == "/" and request.method == "POST":
            if not cluster_local(request.host):
                raise HttpProblem("not_found", "Not found", "no route for POST /")
            return self._event(request)
        if (request.content_length or 0) > limits.request_body_bytes_max:
            raise HttpProblem("payload_too_large", "Payload too large", "the body is too large")
        adapter = self.url_map.bind("holdfast", path_info=path)
        try:
            endpoint, args = adapter.match(method=request.method)
        except NotFound as error:
            raise HttpProblem("not_found", "Not found", f"no route for {path}") from error
        except MethodNotAllowed as error:
            raise HttpProblem(
                "method_not_allowed",
                "Method not allowed",
                f"{request.method} {path}",
                allow=sorted(error.valid_methods or []),
            ) from error
        route = self.routes[f"{endpoint} {request.method}"]
        runtime = self.runtime()
        actor = runtime.verifier.verify(request.headers.get("Authorization"))
        wait_s = runtime.limiter_for(actor).allow(actor.sub)
        if wait_s > 0:
            raise HttpProblem(
                "rate_limited",
                "Too many requests",
                "this token's request rate is over its limit",
                retry_after_s=round(wait_s, 3),
            )
        if route.scope not in actor.scopes:
            raise HttpProblem(
                "insufficient_scope",
                "Insufficient scope",
                f"this call needs the {route.scope} scope",
            )
        reply = route.handler(Call(request, runtime, actor, args))
        if reply.stream is not None:
            response = Response(reply.stream, status=reply.status, mimetype=reply.mimetype)
            response.headers.update(reply.headers)
            return response
        return json_response(reply.status, reply.body, headers=reply.headers)

    def _ready(self) -> Response:
        try:
            with self.runtime().db.engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except Exception as error:
            log.warning("not ready: %s", error)
            return json_response(503, {"status": "unavailable"})
        return json_response(200, {"status": "ready"})

    def _event(self, request: Request) -> Response:
        # Knative does not retry a 400: an oversized event goes to the dead-letter sink.
        too_large = HttpProblem("malformed_request", "Event too large", "the event is over 64 KiB")
        if (request.content_length or 0) > limits.event_bytes_max:
            raise too_large
        data = request.get_data(cache=True)
        if len(data) > limits.event_bytes_max:
            raise too_large
        try:
            event = from_http(dict(request.headers), data)
        except (ce_exceptions.GenericException, ValueError, TypeError, RecursionError) as error:
            raise HttpProblem("malformed_request", "Malformed CloudEvent", str(error)) from error
        for attribute in ("source", "id", "type"):
            if not printable(str(event[attribute])):
                raise HttpProblem(
                    "malformed_request",
                    "Malformed CloudEvent",
                    f"{attribute} must be printable text",
                )
        span = trace.get_current_span()
        span.set_attribute("cloudevents.event_type", str(event["type"]))
        span.set_attribute("cloudevents.event_id", str(event["id"]))
        span.set_attribute("cloudevents.event_source", str(event["source"]))
        handler = self.events.get(str(event["type"]))
        if handler is None:
            raise HttpProblem(
                "malformed_request",
                "Unknown event type",
                f"{self.name} does not take {event['type']}",
            )
        answer = handler(self.runtime(), event)
        if answer.reply is None:
            return Response(status=200)
        headers, body = to_binary(answer.reply)
        return Response(body, status=200, headers=headers)


def framework_error(error: HTTPException) -> Response:
    """What functions-framework itself answers (a path its URL map cannot match, such as one
    holding a newline), as problem+json like every other answer."""
    code = "not_found" if error.code == 404 else "malformed_request"
    status, body = problem(code, error.name, error.description or error.name)
    return json_response(
        error.code or status, {**body, "status": error.code or status}, problem_json=True
    )


def printable(text: str) -> bool:
    """No control characters (NUL cannot be stored) and valid UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return bool(text) and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def cluster_local(host: str) -> bool:
    """Events carry no token: take them only from inside the cluster (or this machine).

    Knative delivers Triggers and PingSources to a Service's cluster-local name; the public
    ingress only routes public host names, so `POST /` under one of those is refused.
    """
    end = host.find("]") + 1 if host.startswith("[") else host.rfind(":")
    name = (host[:end] if end > 0 else host).lower().rstrip(".")
    return (
        name in {"localhost", "127.0.0.1", "[::1]"}
        or "." not in name
        or name.endswith((".svc", ".svc.cluster.local"))
    )


def json_response(
    status: int,
    body: Any,
    *,
    problem_json: bool = False,
    headers: Mapping[str, str] | None = None,
) -> Response:
    response = Response(
        json.dumps(body, separators=(",", ":")),
        status=status,
        mimetype="application/problem+json" if problem_json else "application/json",
    )
    response.headers.update(SECURITY_HEADERS)
    if headers:
        response.headers.update(headers)
    return response


def event_data(event: CloudEvent) -> Any:
    """The data of an inbound event as JSON, or a 400 problem."""
    data = event.get_data()
    if isinstance(data, bytes | str):
        return parse_json(data.encode() if isinstance(data, str) else data)
    return data
