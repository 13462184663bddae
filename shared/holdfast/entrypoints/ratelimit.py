"""Per-token rate limits: a token bucket per subject, in each function instance.

Why in-process: a shared counter would put a hot row on every request. Each instance allows
`rate_per_s` with bursts of `burst`; with N instances a subject gets at most N times that,
which Knative's max-scale bounds. Memory is bounded: the least recently seen subjects are
forgotten past `subjects_max`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: float, subjects_max: int = 10_000) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.subjects_max = subjects_max
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0

    def allow(self, subject: str, now: float | None = None) -> float:
        """0.0 if the request may go ahead, else the seconds to wait before the next one."""
        if not self.enabled:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, seen = self._buckets.pop(subject, (self.burst, now))
            tokens = min(self.burst, tokens + (now - seen) * self.rate_per_s)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate_per_s
            self._buckets[subject] = (tokens, now)
            while len(self._buckets) > self.subjects_max:
                self._buckets.popitem(last=False)
            return wait
