"""The local events ingress: a Knative Broker stand-in that reads the Triggers in knative/.

Each Trigger's `filter.attributes` (exact match, as Knative does) and `subscriber.ref.name`
decide which function gets an event; its `delivery` (retry, backoffPolicy, backoffDelay)
decides how failures are retried; an event that still fails goes to the dead-letter file.
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

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Trigger:
    name: str
    attributes: dict[str, str]
    subscriber: str
    retry: int
    backoff_policy: str
    backoff_delay_s: float

    def matches(self, attributes: dict[str, str]) -> bool:
        return all(attributes.get(k) == v for k, v in self.attributes.items())

    def delay_s(self, attempt: int) -> float:
        if self.backoff_policy == "linear":
            return self.backoff_delay_s * attempt
        return float(self.backoff_delay_s * 2 ** (attempt - 1))


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
        triggers.append(
            Trigger(
                name=document["metadata"]["name"],
                attributes=dict(spec.get("filter", {}).get("attributes", {})),
                subscriber=spec["subscriber"]["ref"]["name"],
                retry=int(delivery.get("retry", 0)),
                backoff_policy=str(delivery.get("backoffPolicy", "exponential")),
                backoff_delay_s=iso_duration_s(str(delivery.get("backoffDelay", "PT0.2S"))),
            )
        )
    return triggers


def attributes_of(headers: dict[str, str], body: bytes) -> dict[str, str]:
    """CloudEvent context attributes from binary (ce-*) or structured mode."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if lowered.get("content-type", "").startswith("application/cloudevents+json"):
        document = json.loads(body)
        return {k: str(v) for k, v in document.items() if k not in {"data", "data_base64"}}
    return {k[3:]: v for k, v in lowered.items() if k.startswith("ce-")}


class Ingress:
    def __init__(
        self, triggers: list[Trigger], upstreams: dict[str, str], dead_letter: Path
    ) -> None:
        self.triggers = triggers
        self.upstreams = upstreams
        self.dead_letter = dead_letter
        self.pending: set[asyncio.Task[None]] = set()

    def accept(self, client: httpx.AsyncClient, headers: dict[str, str], body: bytes) -> int:
        """Schedule delivery to every matching trigger; 202 as a Broker answers, 400 if bad."""
        try:
            attributes = attributes_of(headers, body)
        except ValueError:
            return 400
        if not {"type", "source", "id", "specversion"} <= attributes.keys():
            return 400
        forward = {
            k: v
            for k, v in headers.items()
            if k.lower().startswith("ce-") or k.lower() == "content-type"
        }
        for trigger in self.triggers:
            if trigger.matches(attributes) and trigger.subscriber in self.upstreams:
                task = asyncio.create_task(self._deliver(client, trigger, forward, body))
                self.pending.add(task)
                task.add_done_callback(self.pending.discard)
        return 202

    async def _deliver(
        self, client: httpx.AsyncClient, trigger: Trigger, headers: dict[str, str], body: bytes
    ) -> None:
        url = self.upstreams[trigger.subscriber] + "/"
        last = ""
        for attempt in range(trigger.retry + 1):
            if attempt:
                await asyncio.sleep(trigger.delay_s(attempt))
            try:
                response = await client.post(url, headers=headers, content=body)
            except httpx.HTTPError as error:
                last = f"{type(error).__name__}: {error}"
                continue
            if response.status_code < 300:
                return
            last = f"HTTP {response.status_code}"
            # Knative retries 5xx, 404, 409 and 429; anything else goes straight to the DLQ.
            if response.status_code < 500 and response.status_code not in {404, 409, 429}:
                break
        log.warning("event to %s dead-lettered: %s", trigger.subscriber, last)
        with self.dead_letter.open("a") as sink:
            sink.write(
                json.dumps(
                    {
                        "trigger": trigger.name,
                        "error": last,
                        "headers": headers,
                        "body": body.decode(errors="replace"),
                    }
                )
                + "\n"
            )
