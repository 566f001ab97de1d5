"""The queue keeper: the statements a process's queue workers need, batched per instance.

* Leases: while workers hold items, ONE UPDATE every third of ``QUEUE_LEASE_SECONDS`` extends the
  leases of every item this instance holds (``QueueRepository.renew``), not one per item.
* Outcomes: an ended attempt waits up to ``FLUSH_DELAY_SECONDS`` for others; then ONE UPDATE ends
  them all (``QueueRepository.finish``), each guarded by its owner. Outcomes arriving while a flush
  runs go in the next one.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from src.core.engine.repositories.queue import Finish, QueueRepository

log = logging.getLogger(__name__)

FLUSH_DELAY_SECONDS = 0.25


class QueueKeeper:
    def __init__(self, queue: QueueRepository, *, lease_seconds: float) -> None:
        self._queue = queue
        self._lease = lease_seconds
        self._owners: dict[str, int] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._pending: list[tuple[Finish, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None

    # --- leases --------------------------------------------------------------------------------
    def hold(self, owner: str) -> None:
        self._owners[owner] = self._owners.get(owner, 0) + 1
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_loop(), name="queue-lease-renewal")

    def release(self, owner: str) -> None:
        self._owners[owner] -= 1
        if not self._owners[owner]:
            del self._owners[owner]

    async def _renew_loop(self) -> None:
        while self._owners:
            await asyncio.sleep(self._lease / 3)
            if not self._owners:
                return
            try:
                until = datetime.now(UTC) + timedelta(seconds=self._lease)
                await self._queue.renew(list(self._owners), lease_until=until)
            except Exception:  # the next round tries again; a lease lost meanwhile shows at finish
                log.exception("could not renew queue leases")

    # --- outcomes ------------------------------------------------------------------------------
    async def finish(self, finish: Finish) -> bool:
        """End one attempt (batched with others); True if it ended (False: the item changed
        hands, its lease had expired)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((finish, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="queue-finish")
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        while self._pending:
            await asyncio.sleep(FLUSH_DELAY_SECONDS)
            batch, self._pending = self._pending, []
            try:
                ended = await self._queue.finish([f for f, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for f, future in batch:
                if not future.done():
                    future.set_result(f.queue_item_id in ended)

    async def close(self) -> None:
        for task in (self._renewer, self._flusher):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
