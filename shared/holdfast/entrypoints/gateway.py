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

import aiohttp
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
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


def problem_response(status: int, code: str, title: str, detail: str) -> Response:
    return JSONResponse(
        {
            "type": f"https://holdfast.dev/problems/{code.replace('_', '-')}",
            "title": title,
            "status": status,
            "detail": detail,
            "code": code,
        },
        status_code=status,
        media_type="application/problem+json",
        headers=SECURITY_HEADERS,
    )


def function_for(path: str) -> str | None:
    for prefix, name in PREFIXES.items():
        if path == prefix or path.startswith((prefix + "/", prefix + ":", prefix + "?")):
            return name
    return None


async def forward(
    session: aiohttp.ClientSession, upstreams: Mapping[str, str], request: Request
) -> Response:
    """Send one request on to the function its path names, and its answer back."""
    name = function_for(request.url.path)
    if name is None or name not in upstreams:
        return problem_response(404, "not_found", "Not found", f"no route for {request.url.path}")
    url = upstreams[name] + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    body = await request.body()
    for attempt in (1, 2):
        try:
            upstream = await session.request(request.method, url, headers=headers, data=body)
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            if upstream.content_length is None:  # streamed (the export): streamed on
                return StreamingResponse(
                    _relay(upstream), status_code=upstream.status, headers=out_headers
                )
            try:
                content = await upstream.read()
            finally:
                upstream.release()
            return Response(content, status_code=upstream.status, headers=out_headers)
        except aiohttp.ServerDisconnectedError as error:
            # A kept-alive connection the function closed just as we reused it: nothing
            # was answered, and every Holdfast write is idempotent by its id: once more.
            log.info("upstream %s closed a kept-alive connection (try %d)", name, attempt)
            last: Exception = error
        except (aiohttp.ClientError, TimeoutError) as error:
            last = error
            break
    log.warning("upstream %s failed: %s", name, last)
    return problem_response(503, "unavailable", "Unavailable", f"{name} is unavailable")


async def _relay(upstream: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """A streamed answer's body, chunk by chunk as the function writes it (a 600 MB export
    is never held whole), the upstream connection released however the client leaves."""
    try:
        async for chunk in upstream.content.iter_any():
            yield chunk
    finally:
        upstream.release()


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

    # The proxy's own client: aiohttp (C-accelerated) costs a fraction of httpx per request.
    sessions: list[aiohttp.ClientSession] = []

    async def proxy(request: Request) -> Response:
        return await forward(sessions[0], upstreams, request)

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
        sessions.append(
            aiohttp.ClientSession(
                # Close idle connections before gunicorn's 2 s keep-alive does.
                connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=1.0),
                # 30 s of silence fails a call; a long stream (the export) may take longer.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=30),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        )
        tasks = [asyncio.create_task(tick_loop(t)) for t in ticks if t.function in upstreams]
        tasks += [asyncio.create_task(job()) for job in background]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.aclose()
            await sessions[0].close()

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/events", events, methods=["POST"]),
            Route("/{path:path}", proxy, methods=methods),
        ],
        lifespan=lifespan,
    )
