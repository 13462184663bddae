"""`holdfast dev`'s gateway: one port in front of the three function processes.

    /v1/accounts*  -> accounts      /v1/transfers* -> transfers      /v1/ledger* -> ledger
    POST /events   -> the events ingress: delivers each CloudEvent to the functions whose
                      Knative Trigger filters match it (read from knative/, not written twice)

It also plays the parts Knative plays in a cluster: the PingSources' ticks (expiry sweep and
ledger sealing once a second) and, as a `background` job, the outbox relay (see dev.py).
Background jobs start with the server and are cancelled when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from holdfast.entrypoints.web import SECURITY_HEADERS

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
PREFIXES = {"/v1/accounts": "accounts", "/v1/transfers": "transfers", "/v1/ledger": "ledger"}


@dataclass(frozen=True, slots=True)
class Tick:
    """A PingSource stand-in: POST a ping CloudEvent to a function every `period_s`."""

    function: str
    data: str
    period_s: float = 1.0


def function_for(path: str) -> str | None:
    for prefix, name in PREFIXES.items():
        if path == prefix or path.startswith((prefix + "/", prefix + ":", prefix + "?")):
            return name
    return None


def build(
    upstreams: Mapping[str, str],
    ingress: Callable[[httpx.AsyncClient, Request], asyncio.Future[Response] | object]
    | None = None,
    ticks: tuple[Tick, ...] = (),
    background: tuple[Callable[[], Coroutine[Any, Any, None]], ...] = (),
) -> Starlette:
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(30.0),
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
    )

    async def proxy(request: Request) -> Response:
        name = function_for(request.url.path)
        if name is None or name not in upstreams:
            return JSONResponse(
                {
                    "type": "https://holdfast.dev/problems/not-found",
                    "title": "Not found",
                    "status": 404,
                    "detail": f"no route for {request.url.path}",
                    "code": "not_found",
                },
                status_code=404,
                media_type="application/problem+json",
                headers=SECURITY_HEADERS,
            )
        url = upstreams[name] + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            upstream = await client.request(
                request.method, url, headers=headers, content=await request.body()
            )
        except httpx.HTTPError as error:
            log.warning("upstream %s failed: %s", name, error)
            return JSONResponse(
                {
                    "type": "https://holdfast.dev/problems/unavailable",
                    "title": "Unavailable",
                    "status": 503,
                    "detail": f"{name} is unavailable",
                    "code": "unavailable",
                },
                status_code=503,
                media_type="application/problem+json",
                headers=SECURITY_HEADERS,
            )
        out_headers = {
            k: v
            for k, v in upstream.headers.items()
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-encoding"
        }
        return Response(upstream.content, status_code=upstream.status_code, headers=out_headers)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def events(request: Request) -> Response:
        if ingress is None:
            return JSONResponse({"detail": "no events ingress"}, status_code=404)
        result = ingress(client, request)
        response = await result if asyncio.iscoroutine(result) else result
        assert isinstance(response, Response)
        return response

    async def tick_loop(tick: Tick) -> None:
        headers = {
            "ce-specversion": "1.0",
            "ce-type": "dev.knative.sources.ping",
            "ce-source": f"/holdfast/dev/ping/{tick.function}",
            "content-type": "application/json",
        }
        sequence = 0
        while True:
            sequence += 1
            try:
                await client.post(
                    upstreams[tick.function] + "/",
                    headers={**headers, "ce-id": f"tick-{tick.function}-{sequence}"},
                    content=tick.data,
                )
            except httpx.HTTPError as error:
                log.warning("tick to %s failed: %s", tick.function, error)
            await asyncio.sleep(tick.period_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(tick_loop(t)) for t in ticks if t.function in upstreams]
        tasks += [asyncio.create_task(job()) for job in background]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.aclose()

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/events", events, methods=["POST"]),
            Route("/{path:path}", proxy, methods=methods),
        ],
        lifespan=lifespan,
    )
