"""Small in-process caches for reads on the hot path: ``TtlCache`` (bounded, LRU, e.g. org
profiles) and ``SingleFlight`` (one computation for concurrent misses of the same key).

Changes made through this instance invalidate at once; other instances see them within the TTL.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class TtlCache(Generic[V]):
    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def get(self, key: str) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, value = entry
        if time.monotonic() - stored_at > self._ttl:
            self._entries.pop(key, None)
            return None
        return value

    def put(self, key: str, value: V) -> None:
        if self._ttl <= 0:
            return
        self._entries[key] = (time.monotonic(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def invalidate(self, key: str) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()


class SingleFlight(Generic[V]):
    """Concurrent callers asking for the same key share one computation (e.g. 50 requests whose
    cached key expired at the same moment make one warehouse lookup, not 50)."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[V]] = {}

    async def run(self, key: str, compute: Callable[[], Awaitable[V]]) -> V:
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(compute())
            self._tasks[key] = task
            task.add_done_callback(functools.partial(self._finished, key))
        # shield: a caller that gives up (cancelled) does not cancel the others' computation
        return await asyncio.shield(task)

    def _finished(self, key: str, task: asyncio.Task[V]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved here: no "never retrieved" warning when every caller left
