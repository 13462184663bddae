"""The outbox relay: claim a batch under a lease, send it in order per subject, settle it.

    step:  claim (one transaction)  ->  send: subjects side by side, each subject's rows one
           after the other, stopping at its first failure  ->  settle (one transaction)
    run:   step until nothing is claimable, then poll; prune published rows on a schedule

Invariants:
- a row is marked published only after the sink answered 2xx;
- a relay never starts a send that could still be running when its lease ends (the lease is
  measured from before the claim began, less a margin for clock offsets), so two relays never
  send the same event at the same moment;
- a failed row is retried after a capped exponential backoff with jitter, for ever: nothing
  is dropped; it blocks the later rows of its subject until it is sent.

The relay is at least once: a relay that dies between the 2xx and the settle leaves the row
to be sent again after its lease. Ids are stable, so consumers deduplicate by source + id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol
from uuid import UUID, uuid4

from holdfast import limits, telemetry
from holdfast.adapters import relay as outbox_relay
from holdfast.adapters import repository
from holdfast.adapters.database import Database
from holdfast.adapters.relay import Claimed, Failure, PublishFailed
from holdfast.domain.errors import InvariantViolation

log = logging.getLogger(__name__)


class Publisher(Protocol):
    async def publish(self, row: Claimed, timeout_s: float) -> None:
        """Deliver one event or raise PublishFailed."""


@dataclass(frozen=True, slots=True)
class Policy:
    """Every bound of the relay; the defaults are the named limits, tests shorten them."""

    batch_max: int = limits.relay_batch_max
    scan_max: int = limits.relay_claim_scan_max
    lease_s: float = limits.relay_lease_s
    send_timeout_s: float = limits.relay_send_timeout_s
    clock_margin_s: float = limits.relay_clock_margin_s
    concurrency_max: int = limits.relay_concurrency_max
    backoff_s_first: float = limits.relay_backoff_s_first
    backoff_s_max: float = limits.relay_backoff_s_max
    idle_poll_s: float = limits.relay_idle_poll_s
    error_pause_s_max: float = limits.relay_error_pause_s_max
    prune_interval_s: float = limits.relay_prune_interval_s
    prune_batch_max: int = limits.relay_prune_batch_max
    prune_rounds_max: int = limits.relay_prune_rounds_max
    retention_s: float = limits.relay_published_retention_s

    def __post_init__(self) -> None:
        if not 1 <= self.batch_max <= limits.relay_batch_max:
            raise ValueError(f"batch_max must be 1..{limits.relay_batch_max}")
        if not self.batch_max <= self.scan_max <= limits.relay_claim_scan_max:
            raise ValueError(f"scan_max must be batch_max..{limits.relay_claim_scan_max}")
        if not 1 <= self.concurrency_max <= limits.relay_concurrency_max:
            raise ValueError(f"concurrency_max must be 1..{limits.relay_concurrency_max}")
        if not 1 <= self.prune_batch_max <= limits.relay_prune_batch_max:
            raise ValueError(f"prune_batch_max must be 1..{limits.relay_prune_batch_max}")
        if self.lease_s <= self.send_timeout_s + self.clock_margin_s:
            raise ValueError("a lease must outlast one send plus the clock margin")
        if not 0 < self.backoff_s_first <= self.backoff_s_max:
            raise ValueError("backoff needs 0 < first <= max")

    def backoff_s(self, failures: int, rng: random.Random) -> float:
        """Delay after the `failures`-th failure in a row (1-based): exponential, capped, with
        "equal jitter" (half fixed, half random) so relays retrying together spread out."""
        exponent = min(max(failures - 1, 0), 62)
        cap = min(self.backoff_s_max, self.backoff_s_first * 2.0**exponent)
        return cap / 2 + rng.uniform(0, cap / 2)


@dataclass(slots=True)
class Step:
    """What one step did."""

    claimed: int = 0
    published: list[UUID] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    unsent: list[UUID] = field(default_factory=list)


def relay_name(prefix: str = "relay") -> str:
    return f"{prefix}@{socket.gethostname()}:{os.getpid()}"


class Relay:
    def __init__(
        self,
        db: Database,
        publisher: Publisher,
        policy: Policy | None = None,
        *,
        name: str | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.publisher = publisher
        self.policy = policy or Policy()
        self.name = name or relay_name()
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
        self.clock = clock

    # -- one step -------------------------------------------------------------------------

    def claim(self) -> tuple[str, float, list[Claimed]]:
        """Lease a batch: (lease token, local time before the claim began, rows in order)."""
        token = f"{self.name}/{uuid4().hex[:12]}"
        started = self.clock()
        rows = self.db.run(
            lambda connection: outbox_relay.claim(
                connection,
                token,
                repository.now(connection),
                self.policy.lease_s,
                batch_max=self.policy.batch_max,
                scan_max=self.policy.scan_max,
            )
        )
        return token, started, rows

    async def step(self) -> Step:
        token, started, rows = await asyncio.to_thread(self.claim)
        step = Step(claimed=len(rows))
        if not rows:
            return step
        deadline = started + self.policy.lease_s - self.policy.clock_margin_s
        chains: dict[str, list[Claimed]] = {}
        for row in rows:
            chains.setdefault(row.subject, []).append(row)
        gate = asyncio.Semaphore(self.policy.concurrency_max)
        try:
            await asyncio.gather(
                *(self._send(chain, deadline, gate, step) for chain in chains.values())
            )
        finally:
            gauges = telemetry.instruments()
            gauges.outbox_published.add(len(step.published))
            gauges.outbox_failures.add(len(step.failed))
            done = set(step.published) | {f.id for f in step.failed}
            step.unsent = [row.id for row in rows if row.id not in done]
            # Shielded: a relay stopped mid-batch still records what the sink took.
            await asyncio.shield(asyncio.to_thread(self._settle, token, step))
        return step

    async def _send(
        self, chain: list[Claimed], deadline: float, gate: asyncio.Semaphore, step: Step
    ) -> None:
        async with gate:
            for row in chain:
                if self.clock() + self.policy.send_timeout_s > deadline:
                    return  # the lease could end mid-send: leave the rest to the next claim
                try:
                    await self.publisher.publish(row, self.policy.send_timeout_s)
                except InvariantViolation:
                    raise
                except Exception as error:
                    reason = str(error) if isinstance(error, PublishFailed) else repr(error)
                    delay = self.policy.backoff_s(row.attempts + 1, self.rng)
                    step.failed.append(Failure(row.id, reason, delay))
                    log.info(
                        "event %s to the sink failed (%s); retry in %.2fs", row.id, reason, delay
                    )
                    return  # later rows of this subject wait for this one
                step.published.append(row.id)

    def _settle(self, token: str, step: Step) -> None:
        self.db.run(
            lambda connection: outbox_relay.settle(
                connection,
                token,
                repository.now(connection),
                published=step.published,
                failed=step.failed,
                unsent=step.unsent,
            )
        )

    def measure(self) -> tuple[int, float]:
        """Export the backlog and the age of its oldest event (for the alerts)."""
        count, age_s = self.db.run(
            lambda connection: outbox_relay.backlog(connection, repository.now(connection))
        )
        gauges = telemetry.instruments()
        gauges.outbox_backlog.set(count)
        gauges.outbox_oldest_age.set(age_s)
        return count, age_s

    # -- pruning --------------------------------------------------------------------------

    def prune(self) -> int:
        """Delete published rows older than the retention, in bounded transactions."""
        total = 0
        for _ in range(self.policy.prune_rounds_max):
            deleted = self.db.run(
                lambda connection: outbox_relay.prune(
                    connection,
                    repository.now(connection) - timedelta(seconds=self.policy.retention_s),
                    self.policy.prune_batch_max,
                )
            )
            total += deleted
            if deleted < self.policy.prune_batch_max:
                break
        return total

    # -- the loop -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Relay until `stop` is set (or the task is cancelled). Survives sink and database
        failures: they are logged and the loop pauses, with a bound, before trying again."""
        stop = stop or asyncio.Event()
        next_prune = self.clock() + self.policy.prune_interval_s
        next_measure = self.clock()
        errors = 0
        while not stop.is_set():
            try:
                if self.clock() >= next_measure:
                    next_measure = self.clock() + limits.relay_measure_interval_s
                    await asyncio.to_thread(self.measure)
                step = await self.step()
                if self.clock() >= next_prune:
                    next_prune = self.clock() + self.policy.prune_interval_s
                    await asyncio.to_thread(self.prune)
            except InvariantViolation:
                raise
            except Exception:
                errors += 1
                pause = min(
                    self.policy.error_pause_s_max, self.policy.idle_poll_s * 2.0 ** min(errors, 16)
                )
                log.exception("relay step failed; pausing %.2fs", pause)
                await _sleep(pause, stop)
                continue
            errors = 0
            if step.claimed == 0 or not step.published:
                await _sleep(self.policy.idle_poll_s, stop)


async def _sleep(seconds: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
