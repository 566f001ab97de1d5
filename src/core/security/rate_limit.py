"""In-process sliding-window limits: failed authentications and admin calls, per client address.

Per instance by design (a gateway or Cloud Armor is the place for global limits); bounded memory.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque


class SlidingWindowLimiter:
    def __init__(self, limit: int, window_seconds: float, max_clients: int = 50_000) -> None:
        self.limit = limit
        self.window = window_seconds
        self._max = max_clients
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float]:
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
            while len(self._hits) > self._max:
                self._hits.popitem(last=False)
        self._hits.move_to_end(key)
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return hits

    def retry_after(self, key: str) -> int | None:
        """Seconds until ``key`` may try again, or None when it is under the limit."""
        if self.limit <= 0 or key not in self._hits:  # a client that never failed: no entry made
            return None
        now = time.monotonic()
        hits = self._recent(key, now)
        if len(hits) < self.limit:
            return None
        return max(1, math.ceil(hits[0] + self.window - now))

    def hit(self, key: str) -> None:
        if self.limit > 0:
            self._recent(key, time.monotonic()).append(time.monotonic())

    def clear(self, key: str) -> None:
        self._hits.pop(key, None)


class TokenBucket:
    """A global budget: ``rate`` operations per second on average, ``burst`` at once (0 = off).

    Used for warehouse lookups of keys that are in no cache: however many made-up keys arrive, the
    warehouse sees at most ``burst + rate * seconds`` of their lookups from this instance."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = time.monotonic()

    def take(self) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait_seconds(self) -> int:
        return max(1, math.ceil((1.0 - self._tokens) / self.rate)) if self.rate > 0 else 1
