"""The outbox relay's figures: events relayed per second, and commit-to-delivery delay.

On a fresh embedded PostgreSQL and a local HTTP sink (keep-alive, answers 202), in one run:
  1. baseline: the same binary CloudEvent POSTs sent straight to the sink by an asyncio loop
     with the relay's concurrency (the ceiling of the sink and of HTTP from Python here);
  2. throughput: a backlog of N committed outbox events (many subjects) drained by one relay,
     then by two relays at once;
  3. latency: events committed at a steady rate, one per transaction, while a relay runs;
     the delay from each commit returning to the sink receiving the event (median, p99),
     against the baseline of a single direct POST at the same rate.

This is a script that prints figures, not a test: nothing here asserts a speed.
    .venv/bin/python bench/relay.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

import httpx
import local  # bench/local.py: processes built through the composition root

from holdfast.adapters import outbox, repository
from holdfast.adapters.database import Database, EmbeddedPostgres, create_engine, migrate
from holdfast.adapters.relay import Claimed, HttpPublisher, binary_request
from holdfast.services.relay import Policy, Relay

ACCEPTED = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n"


def serve_sink(port_out: Connection, arrivals: Connection) -> None:
    """The sink, in a process of its own (no GIL shared with the relay): a minimal asyncio
    HTTP/1.1 server (keep-alive) that answers 202 and reports (event id, CLOCK_MONOTONIC at
    arrival) for every request. Minimal on purpose, so the relay, not the sink, is measured."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.monotonic()  # system-wide on Linux: comparable across processes
                headers = dict(
                    line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line
                )
                lowered = {k.lower(): v for k, v in headers.items()}
                await reader.readexactly(int(lowered.get("content-length", "0")))
                arrivals.send((lowered.get("ce-id", ""), arrived))
                writer.write(ACCEPTED)
                await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=256)
        port_out.send(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


class Sink:
    """Starts the sink process and collects when each event id first arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        port_in, port_out = multiprocessing.Pipe(duplex=False)
        arrivals_in, arrivals_out = multiprocessing.Pipe(duplex=False)
        self.process = multiprocessing.Process(
            target=serve_sink, args=(port_out, arrivals_out), daemon=True
        )
        self.process.start()
        self.url = f"http://127.0.0.1:{port_in.recv()}/"
        self._arrivals = arrivals_in
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        with contextlib.suppress(EOFError, OSError):
            while True:
                event_id, at = self._arrivals.recv()
                self.arrived.setdefault(event_id, at)

    def stop(self) -> None:
        self.process.terminate()
        self.process.join()


def sample_row(n: int) -> Claimed:
    return Claimed(
        uuid.uuid4(),
        "dev.holdfast.transfer.reserved.v1",
        "/holdfast/transfers",
        f"subject-{n % 500}",
        {"id": str(uuid.uuid4()), "state": "reserved", "amount": 100 + n},
        outbox.fresh_traceparent(),
        datetime.now(UTC),
        0,
        0,
    )


async def baseline_throughput(url: str, count: int, concurrency: int) -> float:
    rows = [sample_row(n) for n in range(count)]
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency)) as client:

        async def post(row: Claimed) -> None:
            async with gate:
                headers, body = binary_request(row)
                response = await client.post(url, headers=headers, content=body)
                response.raise_for_status()

        started = time.monotonic()
        await asyncio.gather(*(post(r) for r in rows))
        return count / (time.monotonic() - started)


def baseline_latency(url: str, rate: float, duration_s: float) -> list[float]:
    delays = []
    with httpx.Client() as client:
        deadline = time.monotonic() + duration_s
        n = 0
        while time.monotonic() < deadline:
            headers, body = binary_request(sample_row(n))
            started = time.monotonic()
            client.post(url, headers=headers, content=body).raise_for_status()
            delays.append(time.monotonic() - started)
            n += 1
            time.sleep(max(0.0, 1 / rate - delays[-1]))
    return delays


def fill(db: Database, count: int, subjects: int) -> list[str]:
    ids: list[str] = []
    batch = 500
    for start in range(0, count, batch):
        events = [
            outbox.OutboundEvent(
                "dev.holdfast.transfer.reserved.v1",
                "/holdfast/transfers",
                f"s{n % subjects}",
                {"n": n, "state": "reserved", "amount": n},
                key=f"bench/{uuid.uuid4()}",
            )
            for n in range(start, min(count, start + batch))
        ]
        db.run(lambda c, e=events: outbox.append(c, e, repository.now(c)))
        ids.extend(str(e.id) for e in events)
    return ids


def drain_with(db: Database, sink: Sink, relays: int, expected: set[str]) -> float:
    """Run `relays` relays (each in its own thread and event loop) until all arrived."""
    stop = threading.Event()

    def work(n: int) -> None:
        async def main() -> None:
            relay = Relay(db, HttpPublisher(sink.url), Policy(idle_poll_s=0.01), name=f"bench-{n}")
            while not stop.is_set():
                step = await relay.step()
                if not step.published:
                    await asyncio.sleep(0.01)

        asyncio.run(main())

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(n,)) for n in range(relays)]
    for thread in threads:
        thread.start()
    while not expected <= sink.arrived.keys():
        time.sleep(0.005)
    elapsed = time.monotonic() - started
    stop.set()
    for thread in threads:
        thread.join()
    return len(expected) / elapsed


def steady_latency(db: Database, sink: Sink, rate: float, duration_s: float) -> list[float]:
    committed: dict[str, float] = {}
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    relay = Relay(db, HttpPublisher(sink.url), name="bench-steady")
    runner = threading.Thread(target=loop.run_until_complete, args=(relay.run(stop),))
    runner.start()
    deadline = time.monotonic() + duration_s
    n = 0
    while time.monotonic() < deadline:
        started = time.monotonic()
        event = outbox.OutboundEvent(
            "dev.holdfast.transfer.confirmed.v1",
            "/holdfast/transfers",
            f"steady-{n % 50}",
            {"n": n},
            key=f"steady/{uuid.uuid4()}",
        )
        db.run(lambda c, e=event: outbox.append(c, [e], repository.now(c)))
        committed[str(event.id)] = time.monotonic()
        n += 1
        time.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))
    settle_deadline = time.monotonic() + 10
    while not committed.keys() <= sink.arrived.keys() and time.monotonic() < settle_deadline:
        time.sleep(0.01)
    loop.call_soon_threadsafe(stop.set)
    runner.join()
    missing = committed.keys() - sink.arrived.keys()
    if missing:
        print(f"  !! {len(missing)} events not delivered")
    return [sink.arrived[i] - t for i, t in committed.items() if i in sink.arrived]


def figures(delays: list[float]) -> str:
    ordered = sorted(delays)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"median {statistics.median(ordered) * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms"
        f"   (n={len(ordered)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (about 30 s)")
    args = parser.parse_args()
    backlog = 3_000 if args.quick else 20_000
    rate, duration_s = (100.0, 5.0) if args.quick else (200.0, 15.0)
    concurrency = Policy().concurrency_max

    with tempfile.TemporaryDirectory(prefix="holdfast-bench-relay-") as home:
        embedded = EmbeddedPostgres(Path(home))
        url = embedded.start()
        engine = create_engine(url, pool_size=8)
        migrate(engine)
        db = local.database(url, home, pool_size=8, cipher=False)
        sink = Sink()
        try:
            print(f"outbox relay benchmark (python {sys.version.split()[0]}, embedded PostgreSQL)")
            raw = asyncio.run(baseline_throughput(sink.url, backlog, concurrency))
            print(f"baseline  direct POSTs to the sink, {concurrency} at once: {raw:8.0f} /s")
            for relays in (1, 2):
                ids = fill(db, backlog, subjects=max(1, backlog // 10))
                rate_relayed = drain_with(db, sink, relays, set(ids))
                print(
                    f"relay     {backlog} committed events, {relays} relay(s):   "
                    f"{rate_relayed:8.0f} /s  ({rate_relayed / raw:.0%} of baseline)"
                )
            direct = baseline_latency(sink.url, rate, duration_s / 3)
            print(f"baseline  one direct POST, up to {rate:.0f}/s:  {figures(direct)}")
            delays = steady_latency(db, sink, rate, duration_s)
            achieved = len(delays) / duration_s
            print(f"relay     commit -> sink at {achieved:.0f} events/s: {figures(delays)}")
            print(f"          (idle poll {Policy().idle_poll_s * 1000:.0f} ms bounds the median)")
        finally:
            sink.stop()
            db.dispose()
            embedded.stop()


if __name__ == "__main__":
    main()
