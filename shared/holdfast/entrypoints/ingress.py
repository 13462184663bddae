"""The local events ingress: a Knative Broker stand-in that reads the Triggers in knative/.

Each Trigger's `filter.attributes` (exact match, as Knative does) and `subscriber.ref.name`
decide which function gets an event; its `delivery` (retry, backoffPolicy, backoffDelay,
timeout), merged over the Broker's, decides how failures are retried, the way Knative's
dispatcher does it:

- retried: transport errors and timeouts, 5xx, 404, 408, 409 and 429;
- not retried: 3xx and every other 4xx (a 400 is a malformed event: retrying cannot help);
- the n-th retry waits backoffDelay * 2**(n-1) (exponential) or backoffDelay * (n-1) (linear);
- an event that still fails goes to the dead-letter file (one JSON line each, with Knative's
  `knativeerrordest`, `knativeerrorcode` and `knativeerrordata`).

As a Broker does, deliveries carry `Prefer: reply`, and a subscriber's 200 reply event (a
rejection, say) is put back into the ingress and routed by the same Triggers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from holdfast import limits

log = logging.getLogger(__name__)

RETRIED_STATUSES = frozenset({404, 408, 409, 429})
REQUIRED_ATTRIBUTES = frozenset({"type", "source", "id", "specversion"})
ERROR_DATA_CHARS_MAX = 1_000


@dataclass(frozen=True, slots=True)
class Trigger:
    name: str
    attributes: dict[str, str]
    subscriber: str
    retry: int
    backoff_policy: str
    backoff_delay_s: float
    timeout_s: float | None = None

    def matches(self, attributes: dict[str, str]) -> bool:
        return all(attributes.get(k) == v for k, v in self.attributes.items())

    def delay_s(self, attempt: int) -> float:
        """The wait before retry number `attempt` (1-based). Knative's dispatcher counts
        retries from 0 here, so a linear policy's first retry is immediate."""
        if self.backoff_policy == "linear":
            return self.backoff_delay_s * (attempt - 1)
        return float(self.backoff_delay_s * 2 ** (attempt - 1))


def retried(status: int) -> bool:
    return status >= 500 or status in RETRIED_STATUSES


def iso_duration_s(text: str) -> float:
    """The ISO 8601 durations Knative delivery specs use (PT0.2S, PT1M, ...)."""
    match = re.fullmatch(r"P(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)", text)
    if not match:
        raise ValueError(f"not an ISO 8601 duration: {text}")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def load_triggers(knative_dir: Path) -> list[Trigger]:
    """Every Trigger in the base manifests (broker delivery is the default for each)."""
    documents: list[dict[str, Any]] = []
    for path in sorted((knative_dir / "base").glob("*.yaml")):
        documents.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    broker_delivery: dict[str, Any] = {}
    for document in documents:
        if document.get("kind") == "Broker":
            broker_delivery = document.get("spec", {}).get("delivery", {})
    triggers = []
    for document in documents:
        if document.get("kind") != "Trigger":
            continue
        spec = document["spec"]
        delivery = {**broker_delivery, **spec.get("delivery", {})}
        timeout = delivery.get("timeout")
        triggers.append(
            Trigger(
                name=document["metadata"]["name"],
                attributes=dict(spec.get("filter", {}).get("attributes", {})),
                subscriber=spec["subscriber"]["ref"]["name"],
                retry=int(delivery.get("retry", 0)),
                backoff_policy=str(delivery.get("backoffPolicy", "exponential")),
                backoff_delay_s=iso_duration_s(str(delivery.get("backoffDelay", "PT0.2S"))),
                timeout_s=iso_duration_s(str(timeout)) if timeout else None,
            )
        )
    return triggers


def attributes_of(headers: dict[str, str], body: bytes) -> dict[str, str]:
    """CloudEvent context attributes from binary (ce-*) or structured mode; ValueError if
    the body is not a structured event where the content type says it is."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if lowered.get("content-type", "").startswith("application/cloudevents+json"):
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError("a structured CloudEvent is a JSON object")
        return {k: str(v) for k, v in document.items() if k not in {"data", "data_base64"}}
    return {k[3:]: v for k, v in lowered.items() if k.startswith("ce-")}


def is_cloudevent(headers: httpx.Headers) -> bool:
    content_type = headers.get("content-type", "")
    return "ce-specversion" in headers or content_type.startswith("application/cloudevents+")


class Ingress:
    def __init__(
        self, triggers: list[Trigger], upstreams: dict[str, str], dead_letter: Path
    ) -> None:
        self.triggers = triggers
        self.upstreams = upstreams
        self.dead_letter = dead_letter
        self.pending: set[asyncio.Task[None]] = set()

    def accept(self, client: httpx.AsyncClient, headers: dict[str, str], body: bytes) -> int:
        """Schedule delivery to every matching trigger: 202 as a Broker answers; 400 for a
        body that is no CloudEvent, 413 for one over the event size limit."""
        if len(body) > limits.event_bytes_max:
            return 413
        try:
            attributes = attributes_of(headers, body)
        except ValueError:
            return 400
        if not attributes.keys() >= REQUIRED_ATTRIBUTES:
            return 400
        forward = {
            k: v
            for k, v in headers.items()
            if k.lower().startswith("ce-") or k.lower() in {"content-type", "traceparent"}
        }
        for trigger in self.triggers:
            if trigger.matches(attributes) and trigger.subscriber in self.upstreams:
                task = asyncio.create_task(self._deliver(client, trigger, forward, body))
                self.pending.add(task)
                task.add_done_callback(self.pending.discard)
        return 202

    async def drain(self) -> None:
        """Wait until every delivery scheduled so far (and every reply it caused) is done."""
        while self.pending:
            await asyncio.gather(*list(self.pending), return_exceptions=True)

    async def _deliver(
        self, client: httpx.AsyncClient, trigger: Trigger, headers: dict[str, str], body: bytes
    ) -> None:
        url = self.upstreams[trigger.subscriber] + "/"
        last, code, data = "", -1, ""
        for attempt in range(trigger.retry + 1):
            if attempt:
                await asyncio.sleep(trigger.delay_s(attempt))
            try:
                response = await client.post(
                    url,
                    headers={**headers, "Prefer": "reply"},
                    content=body,
                    timeout=trigger.timeout_s or httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.HTTPError as error:
                last, code, data = f"{type(error).__name__}: {error}", -1, ""
                continue
            if response.status_code < 300:
                self._reply(client, response)
                return
            last, code = f"HTTP {response.status_code}", response.status_code
            data = response.text[:ERROR_DATA_CHARS_MAX]
            if not retried(response.status_code):
                break
        log.warning("event to %s dead-lettered: %s", trigger.subscriber, last)
        record = {
            "trigger": trigger.name,
            "error": last,
            "knativeerrordest": url,
            "knativeerrorcode": code,
            "knativeerrordata": data,
            "headers": headers,
            "body": body.decode(errors="replace"),
        }
        with self.dead_letter.open("a") as sink:
            sink.write(json.dumps(record) + "\n")

    def _reply(self, client: httpx.AsyncClient, response: httpx.Response) -> None:
        """A 200 carrying an event: route it like any event sent to the Broker."""
        if response.status_code != 200 or not is_cloudevent(response.headers):
            return
        headers = {
            k: v
            for k, v in response.headers.items()
            if k.lower().startswith("ce-") or k.lower() == "content-type"
        }
        if self.accept(client, headers, response.content) != 202:
            log.warning("dropped a malformed reply event: %s", headers)
