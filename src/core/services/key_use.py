"""Last use of API keys (``org_api_keys.last_used_at``), written in batches off the request path.

A request only notes its key here. At most every ``KEY_TOUCH_INTERVAL_SECONDS`` one UPDATE writes
the time for every key this instance saw since the last write — one mutating statement per instance
and interval, however many orgs call at once (BigQuery runs 2 mutating DML statements per table at a
time and queues 20). With an interval of 0 the keys noted while a write runs go in the next one.
"""

from __future__ import annotations

import asyncio
import logging

from src.core.engine.repositories.keys import KeyRepository
from src.core.errors import ServiceError

log = logging.getLogger(__name__)


class KeyUse:
    def __init__(self, keys: KeyRepository, *, interval_seconds: float) -> None:
        self._keys = keys
        self._interval = interval_seconds
        self._pending: set[tuple[str, str]] = set()
        self._writer: asyncio.Task[None] | None = None

    def note(self, org_slug: str, key_id: str) -> None:
        """This key was used now (written within the interval)."""
        self._pending.add((org_slug, key_id))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="key-use")

    async def _write(self) -> None:
        while self._pending:
            await asyncio.sleep(self._interval)
            used, self._pending = self._pending, set()
            try:
                await self._keys.touch_many(sorted(used))
            except ServiceError as exc:  # last use is informative: a lost write is logged, not retried
                log.warning("could not record key use", extra={"error": exc.message, "keys": len(used)})

    async def close(self) -> None:
        """Write what is pending (shutdown)."""
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._pending:
            used, self._pending = self._pending, set()
            try:
                await self._keys.touch_many(sorted(used))
            except ServiceError as exc:
                log.warning("could not record key use", extra={"error": exc.message, "keys": len(used)})
