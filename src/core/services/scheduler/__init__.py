"""The scheduler: due schedules become queue items (``trigger``), workers claim items and run them
(``worker``), the in-process loop does both periodically (``loop``), and ``status`` reports the queue.
``SchedulerService`` is the one object the routers and the lifespan talk to.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from src.core.engine.base import RetryPolicy
from src.core.engine.repositories.queue import QueueRepository
from src.core.engine.repositories.schedules import ScheduleRepository
from src.core.errors import WarehouseError
from src.core.services.scheduler.loop import SchedulerLoop
from src.core.services.scheduler.status import STATES, scheduler_status
from src.core.services.scheduler.trigger import ScheduleTrigger, due_key
from src.core.services.scheduler.worker import QueueWorkers

if TYPE_CHECKING:
    from src.core.services.container import Services

__all__ = ["STATES", "SchedulerService", "due_key"]


class SchedulerService:
    def __init__(self, services: Services, *, retry: RetryPolicy) -> None:
        self._s = services
        self.schedules = ScheduleRepository(services.warehouse, services.catalog, retry=retry)
        self.queue = QueueRepository(services.warehouse, services.catalog, retry=retry)
        self._trigger = ScheduleTrigger(services, self.schedules, self.queue)
        self._workers = QueueWorkers(services, self.schedules, self.queue)
        self._loop = SchedulerLoop(services, trigger=self.trigger, process=self.process)
        self._depth_read_at = -1e9

    async def trigger(self) -> dict[str, Any]:
        return await self._trigger.trigger()

    async def process(self, max_items: int) -> dict[str, Any]:
        return await self._workers.process(max_items)

    async def status(self) -> dict[str, Any]:
        return await scheduler_status(
            self._s, self.schedules, self.queue, last_trigger_at=self._trigger.last_trigger_at
        )

    async def refresh_queue_metrics(self, max_age_seconds: float = 15.0) -> None:
        """Read the queue's depth into the metrics, at most every ``max_age_seconds`` (a scrape
        must not cost a warehouse query each time)."""
        if time.monotonic() - self._depth_read_at < max_age_seconds:
            return
        try:
            counts, _ = await self.queue.depth(datetime.now(UTC))
        except WarehouseError:
            return  # not bootstrapped yet, or the warehouse is away: keep the last figures
        self._s.metrics.set_queue_depth(counts, STATES)
        self._depth_read_at = time.monotonic()

    def start_loop(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        await self._workers.keeper.close()
