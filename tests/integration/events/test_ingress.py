"""`holdfast dev`'s events ingress: the Knative Trigger filters, retries and dead letters,
against real HTTP subscribers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from holdfast.entrypoints.ingress import Ingress, Trigger, load_triggers
from tests.integration.events.conftest import Sink, cloudevent, encode

ROOT = Path(__file__).resolve().parents[3]
RESERVE = "dev.holdfast.transfer.reserve.v1"
OPEN = "dev.holdfast.account.open.v1"


@pytest.fixture
def subscribers() -> Iterator[dict[str, Sink]]:
    running = {name: Sink(status=200).start() for name in ("accounts", "transfers", "audit")}
    try:
        yield running
    finally:
        for sink in running.values():
            sink.stop()


def fast(triggers: list[Trigger]) -> list[Trigger]:
    return [replace(t, backoff_delay_s=0.02) for t in triggers]


def deliver(ingress: Ingress, *events: tuple[dict[str, str], bytes]) -> list[int]:
    async def main() -> list[int]:
        async with httpx.AsyncClient(timeout=5) as client:
            statuses = [ingress.accept(client, headers, body) for headers, body in events]
            await ingress.drain()
            return statuses

    return asyncio.run(main())


def make(
    subscribers: dict[str, Sink], tmp_path: Path, triggers: list[Trigger] | None = None
) -> Ingress:
    return Ingress(
        triggers if triggers is not None else fast(load_triggers(ROOT / "knative")),
        {name: sink.url.rstrip("/") for name, sink in subscribers.items()},
        tmp_path / "dead-letter.jsonl",
    )


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "dead-letter.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_triggers_are_read_from_the_knative_manifests() -> None:
    triggers = {t.attributes["type"]: t for t in load_triggers(ROOT / "knative")}
    assert {k: t.subscriber for k, t in triggers.items()} == {
        OPEN: "accounts",
        RESERVE: "transfers",
        "dev.holdfast.transfer.confirm.v1": "transfers",
        "dev.holdfast.transfer.cancel.v1": "transfers",
    }
    for trigger in triggers.values():
        assert (trigger.retry, trigger.backoff_policy, trigger.backoff_delay_s) == (
            5,
            "exponential",
            0.2,
        )
        assert [trigger.delay_s(n) for n in (1, 2, 3)] == [0.2, 0.4, 0.8]


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_events_go_only_where_a_trigger_filter_matches(
    subscribers: dict[str, Sink], tmp_path: Path, mode: str
) -> None:
    ingress = make(subscribers, tmp_path)
    reserve = cloudevent(RESERVE, {"id": "t"})
    opened = cloudevent(OPEN, {"id": "a"})
    unknown = cloudevent("dev.holdfast.nobody.listens.v1", {})
    assert deliver(ingress, *(encode(e, mode) for e in (reserve, opened, unknown))) == [202] * 3
    assert [
        r.headers.get("ce-id") or r.data()["id"] for r in subscribers["transfers"].requests
    ] == [reserve["id"]]
    assert len(subscribers["accounts"].requests) == 1
    assert subscribers["audit"].requests == []
    assert subscribers["transfers"].requests[0].headers["prefer"] == "reply"
    assert dead_letters(tmp_path) == []


@pytest.mark.parametrize("status", [500, 503, 404, 408, 409, 429])
def test_retryable_failures_are_retried_with_backoff(
    subscribers: dict[str, Sink], tmp_path: Path, status: int
) -> None:
    answers = iter([status, status, 200])
    subscribers["transfers"].decide = lambda headers: (next(answers), 0.0)
    deliver(make(subscribers, tmp_path), encode(cloudevent(RESERVE, {}), "binary"))
    requests = subscribers["transfers"].requests
    assert [r.status for r in requests] == [status, status, 200]
    gaps = [b.started - a.started for a, b in itertools.pairwise(requests)]
    assert gaps[0] >= 0.02 and gaps[1] >= 0.04, "exponential backoff from backoffDelay"
    assert dead_letters(tmp_path) == []


def test_an_event_failing_every_retry_is_dead_lettered(
    subscribers: dict[str, Sink], tmp_path: Path
) -> None:
    subscribers["transfers"].status = 503
    event = cloudevent(RESERVE, {"id": "t"})
    deliver(make(subscribers, tmp_path), encode(event, "binary"))
    assert len(subscribers["transfers"].requests) == 1 + 5
    (letter,) = dead_letters(tmp_path)
    assert letter["trigger"] == "transfer-reserve"
    assert letter["knativeerrorcode"] == 503
    assert letter["knativeerrordest"] == subscribers["transfers"].url
    assert letter["headers"]["ce-id"] == event["id"]
    assert json.loads(letter["body"]) == {"id": "t"}


@pytest.mark.parametrize("status", [400, 403, 422, 301])
def test_a_non_retryable_answer_goes_straight_to_the_dead_letter_file(
    subscribers: dict[str, Sink], tmp_path: Path, status: int
) -> None:
    subscribers["transfers"].status = status
    deliver(make(subscribers, tmp_path), encode(cloudevent(RESERVE, {}), "binary"))
    assert len(subscribers["transfers"].requests) == 1
    assert dead_letters(tmp_path)[0]["knativeerrorcode"] == status


def test_an_unreachable_subscriber_is_retried_then_dead_lettered(
    subscribers: dict[str, Sink], tmp_path: Path
) -> None:
    url = subscribers["transfers"].url
    subscribers["transfers"].stop()
    deliver(make(subscribers, tmp_path), encode(cloudevent(RESERVE, {}), "binary"))
    (letter,) = dead_letters(tmp_path)
    assert "ConnectError" in letter["error"] and letter["knativeerrordest"] == url


def test_a_reply_event_is_routed_back_through_the_triggers(
    subscribers: dict[str, Sink], tmp_path: Path
) -> None:
    rejected = cloudevent("dev.holdfast.transfer.rejected.v1", {"code": "insufficient_funds"})
    subscribers["transfers"].reply = encode(rejected, "binary")
    triggers = [
        *fast(load_triggers(ROOT / "knative")),
        Trigger(
            "audit", {"type": "dev.holdfast.transfer.rejected.v1"}, "audit", 0, "exponential", 0.0
        ),
    ]
    deliver(make(subscribers, tmp_path, triggers), encode(cloudevent(RESERVE, {}), "binary"))
    (got,) = subscribers["audit"].requests
    assert got.headers["ce-id"] == rejected["id"]
    assert got.data() == {"code": "insufficient_funds"}


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"ce-specversion": "1.0", "ce-type": RESERVE, "ce-source": "/x"}, b"{}", 400),
        ({"content-type": "application/cloudevents+json"}, b"{nope", 400),
        ({"content-type": "application/cloudevents+json"}, b"[1]", 400),
        ({"content-type": "application/json"}, b"{}", 400),
        (
            {"ce-specversion": "1.0", "ce-type": RESERVE, "ce-source": "/x", "ce-id": "1"},
            b"x" * (64 * 1024 + 1),
            413,
        ),
    ],
)
def test_the_ingress_refuses_what_is_not_a_cloudevent(
    subscribers: dict[str, Sink], tmp_path: Path, headers: dict[str, str], body: bytes, status: int
) -> None:
    assert deliver(make(subscribers, tmp_path), (headers, body)) == [status]
    assert all(s.requests == [] for s in subscribers.values())
