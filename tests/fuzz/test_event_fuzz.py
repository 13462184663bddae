"""Hypothesis over CloudEvents posted to each function's `POST /` (where Knative delivers).

Random attributes (missing, unknown, odd values, NUL and non-ASCII in structured mode),
content types, binary and structured encodings, garbage bodies, deep nesting, and data sizes
up to and past the 64 KiB event limit. For every request:
- never a 5xx (Knative would retry a malformed event forever instead of dead-lettering it);
- a 400 changes nothing (every row of every table compared);
- an event over 64 KiB, one missing a required attribute, or one of a type the function does
  not take is 400; a well-formed event whose data fits the type's model is 200;
- bounded time (REQUEST_SECONDS_MAX) and memory: tracemalloc's peak while the request is
  served stays under PEAK_BYTES_MAX (why that bound: see below).
"""

from __future__ import annotations

import base64
import json
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from werkzeug.test import Client

from holdfast import limits
from holdfast.entrypoints.events import INBOUND
from tests.conftest import snapshot
from tests.fuzz.service import Seed, function_app, gateway_app, seed, unlimited

EXAMPLES_PER_FUNCTION = 120
REQUEST_SECONDS_MAX = 2.0
# A body is at most 64 KiB (bigger ones are refused before they are read). Parsing 64 KiB of
# JSON makes at most ~21k small Python objects (`[{},{},...]`: ~1.4 MiB) plus the copies the
# request, CloudEvents SDK and pydantic keep (a handful of 64 KiB buffers): a few MiB. 16 MiB
# is far above any honest peak and far below what an unbounded read of a large body takes.
PEAK_BYTES_MAX = 16 * 1024 * 1024
TAKES = {
    "accounts": {"dev.holdfast.account.open.v1"},
    "transfers": {
        "dev.holdfast.transfer.reserve.v1",
        "dev.holdfast.transfer.confirm.v1",
        "dev.holdfast.transfer.cancel.v1",
        "dev.knative.sources.ping",
    },
    "ledger": {"dev.knative.sources.ping"},
}
EVERY_TYPE = sorted(set().union(*TAKES.values()) | {"dev.holdfast.transfer.confirmed.v1"})
REQUIRED = ("specversion", "type", "source", "id")
LIMIT = limits.event_bytes_max
SIZES = [0, 1_000, 32_000, LIMIT - 200, LIMIT - 1, LIMIT + 1, LIMIT + 5_000, 4 * LIMIT]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/octet-stream",
    "application/xml",
    "",
]
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
ANY_TEXT = st.text(max_size=40)  # any code point, NUL and lone surrogates excepted by JSON
DEEP = b"[" * 20_000 + b"]" * 20_000  # 40 KB: under the limit, past the JSON parser's depth
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)


@dataclass
class Event:
    mode: str  # binary | structured | garbage
    attributes: dict[str, Any]
    data: Any  # JSON value, or bytes (sent as they are)
    content_type: str
    pad_to: int

    @property
    def well_formed(self) -> bool:
        good = {
            "specversion": self.attributes.get("specversion") == "1.0",
            "type": isinstance(self.attributes.get("type"), str),
            "source": _plain(self.attributes.get("source")),
            "id": _plain(self.attributes.get("id")),
        }
        extras_ok = all(_plain(v) for k, v in self.attributes.items() if k not in REQUIRED)
        json_data = self.mode == "structured" or self.content_type.startswith("application/json")
        return self.mode != "garbage" and all(good.values()) and extras_ok and json_data


def _plain(value: Any) -> bool:
    return isinstance(value, str) and value != "" and value.isascii() and value.isprintable()


def data_for(
    event_type: str, seeded: Seed, *, plausible_only: bool = False
) -> st.SearchStrategy[Any]:
    """Plausible data for a type (often valid), with random fields mixed in."""
    account = st.sampled_from(seeded.accounts) | st.uuids().map(str)
    transfer = st.sampled_from(seeded.transfers) | st.uuids().map(str)
    amount = st.integers(-5, 10**6) | st.sampled_from([1, 2**53, 1.5, "5", True, None])
    shapes: dict[str, st.SearchStrategy[dict[str, Any]]] = {
        "dev.holdfast.account.open.v1": st.fixed_dictionaries(
            {"id": st.uuids().map(str), "currency": st.sampled_from(["EUR", "XYZ", "eur"])},
            optional={
                "owner": st.text(min_size=1, max_size=20),
                "metadata": st.dictionaries(ANY_TEXT, JSON_VALUES, max_size=3),
            },
        ),
        "dev.holdfast.transfer.reserve.v1": st.fixed_dictionaries(
            {
                "id": st.uuids().map(str),
                "currency": st.just("EUR"),
                "debit_account_id": account,
                "credit_account_id": account,
                "amount": amount,
            },
            optional={"timeout_s": st.integers(-1, 100_000), "immediate": st.booleans()},
        ),
        "dev.holdfast.transfer.confirm.v1": st.fixed_dictionaries(
            {"id": transfer}, optional={"amount": amount}
        ),
        "dev.holdfast.transfer.cancel.v1": st.fixed_dictionaries({"id": transfer}),
    }
    plausible = shapes.get(event_type, st.fixed_dictionaries({"task": st.just("tick")}))
    return plausible if plausible_only else plausible | JSON_VALUES


@st.composite
def events(draw: st.DrawFn, seeded: Seed, takes: set[str]) -> Event:
    """Half clean events (of this function's types, or another's), half anything goes."""
    if draw(st.booleans()):
        event_type = draw(st.sampled_from(sorted(takes)) | st.sampled_from(EVERY_TYPE))
        attributes: dict[str, Any] = {
            "specversion": "1.0",
            "type": event_type,
            "source": "/tests/fuzz",
            "id": str(draw(st.uuids())),
        }
        if draw(st.booleans()):
            attributes["subject"] = draw(st.from_regex(r"\A[a-z0-9-]{1,36}\Z"))
        return Event(
            mode=draw(st.sampled_from(["binary", "structured"])),
            attributes=attributes,
            data=draw(data_for(event_type, seeded, plausible_only=True)),
            content_type="application/json",
            pad_to=draw(st.sampled_from(SIZES)),
        )
    event_type = draw(st.sampled_from(EVERY_TYPE) | HEADER_TEXT)
    attributes = {
        "specversion": draw(st.sampled_from(["1.0", "1.0", "1.0", "0.3", "2.0", ""])),
        "type": event_type,
        "source": draw(st.just("/tests/fuzz") | HEADER_TEXT),
        "id": draw(st.uuids().map(str) | HEADER_TEXT),
    }
    for name in draw(st.lists(st.sampled_from(REQUIRED), max_size=2)):
        attributes.pop(name, None)
    extras = st.sampled_from(["subject", "time", "traceparent", "dataschema", "partitionkey"])
    for name in draw(st.lists(extras | st.from_regex(r"\A[a-z0-9]{1,12}\Z"), max_size=3)):
        attributes[name] = draw(HEADER_TEXT)
    mode = draw(st.sampled_from(["binary", "binary", "structured", "structured", "garbage"]))
    if mode == "structured" and draw(st.booleans()):  # non-ASCII, NUL: only JSON can carry them
        attributes[draw(st.sampled_from(["source", "id", "subject"]))] = draw(ANY_TEXT)
    if mode == "garbage":
        data: Any = draw(st.binary(max_size=200) | st.just(DEEP))
    else:
        data = draw(data_for(str(event_type), seeded) | st.binary(max_size=100))
    return Event(
        mode=mode,
        attributes=attributes,
        data=data,
        content_type=draw(st.sampled_from(CONTENT_TYPES) | HEADER_TEXT),
        pad_to=draw(st.sampled_from(SIZES)),
    )


def padded(event: Event) -> Any:
    """The event's data, an object grown to about `pad_to` bytes by a metadata field."""
    data = event.data
    if isinstance(data, dict) and event.pad_to:
        data = {**data, "metadata": {"pad": ""}}
        size = len(json.dumps(data))
        data["metadata"]["pad"] = "x" * max(0, event.pad_to - size)
    return data


def encode(event: Event) -> tuple[dict[str, str], bytes]:
    data = padded(event)
    if event.mode == "structured":
        envelope = dict(event.attributes)
        if isinstance(data, bytes):
            envelope["data_base64"] = base64.b64encode(data).decode()
        else:
            envelope["data"] = data
        return {"content-type": "application/cloudevents+json"}, json.dumps(envelope).encode()
    headers = {f"ce-{name}": str(value) for name, value in event.attributes.items()}
    if event.content_type:
        headers["content-type"] = event.content_type
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    if event.mode == "garbage":
        headers = {k: v for k, v in headers.items() if k != "ce-specversion"} | {
            "content-type": event.content_type or "application/cloudevents+json"
        }
    return headers, body


def valid_data(event_type: str, data: Any) -> bool:
    model = INBOUND.get(event_type)
    if model is None:
        return True  # the ping: its data is not read
    try:
        model.model_validate(data)
    except ValidationError:
        return False
    return True


def known_bug(event: Event, body: bytes, status: int) -> str | None:
    """Bugs found and not yet fixed, by name: counted, not failed on. Every bug this run found
    so far is fixed (tests/security/test_hostile_input.py keeps each as a regression test)."""
    return None


@dataclass
class Report:
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    slowest_s: float = 0.0
    peak_bytes: int = 0
    largest_body: int = 0
    known: Counter[str] = field(default_factory=Counter)


def check(name: str, event: Event, client: Client, db: Any, report: Report) -> None:
    headers, body = encode(event)
    report.largest_body = max(report.largest_body, len(body))
    before = snapshot(db)
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    started = time.perf_counter()
    response = client.post("/", headers=headers, data=body)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    status = response.status_code
    report.statuses[(name, status)] += 1
    report.slowest_s = max(report.slowest_s, elapsed)
    report.peak_bytes = max(report.peak_bytes, peak - base)
    event_type = str(event.attributes.get("type"))
    data = padded(event)
    missing = [a for a in REQUIRED if a not in event.attributes]
    expect_400 = []
    if len(body) > LIMIT:
        expect_400.append("over 64 KiB")
    if missing and event.mode != "garbage":
        expect_400.append(f"missing {missing}")
    if event.well_formed and event_type not in TAKES[name]:
        expect_400.append("a type this function does not take")
    if event.well_formed and not valid_data(event_type, data):
        expect_400.append("data that does not fit the model")
    expect_200 = (
        event.well_formed
        and event_type in TAKES[name]
        and len(body) <= LIMIT
        and valid_data(event_type, data)
    )
    kind = "over limit" if len(body) > LIMIT else ("well-formed" if expect_200 else "other")
    report.kinds[f"{kind} -> {status}"] += 1
    problems = []
    if status >= 500 or status not in {200, 400}:
        problems.append(f"answered {status}")
    if expect_400 and status != 400:
        problems.append(f"expected 400 ({', '.join(expect_400)}), got {status}")
    if expect_200 and status != 200:
        problems.append(f"expected 200 for a well-formed event, got {status}")
    if status == 400 and snapshot(db) != before:
        problems.append("a 400 changed the database")
    if elapsed > REQUEST_SECONDS_MAX:
        problems.append(f"took {elapsed:.2f}s")
    if peak - base > PEAK_BYTES_MAX:
        problems.append(f"peak memory {peak - base} bytes")
    known = known_bug(event, body, status)
    if problems and known:
        report.known[known] += 1
        return
    if problems and len(report.failures) < 100:
        shown = {"headers": headers, "body": body[:300], "answer": response.get_data()[:300]}
        report.failures.append(f"{name}: {'; '.join(problems)} <- {shown}")


@pytest.mark.parametrize("name", ["accounts", "transfers", "ledger"])
def test_random_cloudevents_are_answered_200_or_400_in_bounded_time_and_memory(
    name: str, runtime, issuer, db
) -> None:
    unlimited(runtime)
    seeded = seed(Client(gateway_app()), issuer, runtime)
    client = Client(function_app(name))
    report = Report()

    @settings(
        max_examples=EXAMPLES_PER_FUNCTION,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(event=events(seeded, TAKES[name]))
    def fuzz(event: Event) -> None:
        check(name, event, client, db, report)

    tracemalloc.start()
    try:
        fuzz()
    finally:
        tracemalloc.stop()
    total = sum(report.statuses.values())
    print(
        f"\n[figures] CloudEvents fuzz, {name}: {total} events, statuses "
        f"{dict(sorted((s, n) for (_, s), n in report.statuses.items()))}, "
        f"{dict(sorted(report.kinds.items()))}; largest body {report.largest_body} bytes; "
        f"slowest {report.slowest_s * 1000:.0f} ms; peak {report.peak_bytes / 2**20:.2f} MiB; "
        f"{len(report.failures)} failures"
    )
    for bug, count in report.known.items():
        print(f"  known bug, {count} events: {bug}")
    for failure in report.failures:
        print("FAIL", failure[:1200])
    assert report.failures == []
