"""A bounded thread pool of its own for blocking client calls (Google's BigQuery and KMS clients).

Google's Python clients block. Run on asyncio's default pool (5-6 threads on a small instance, shared
with everything else), a handful of long calls would starve the service. Here they get a pool sized
by ``GOOGLE_CLIENT_THREADS``, and nothing holds a thread for long: a BigQuery job is inserted, then
polled with short calls between ``asyncio.sleep``s (``bigquery_backend``), so a thread is busy for
one HTTP round trip at a time, not for the job's whole duration.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class BlockingCalls:
    def __init__(self, size: int, *, name: str = "google") -> None:
        self.size = size
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix=name)  # threads start on demand

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


_shared: BlockingCalls | None = None


def default_calls() -> BlockingCalls:
    """The pool used where none was given (tests and tools that build a client directly)."""
    global _shared
    if _shared is None:
        _shared = BlockingCalls(8)
    return _shared
