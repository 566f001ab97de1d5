"""The in-process scheduler loop (development, or a single always-on instance): trigger, then
process the queue, every ``SCHEDULER_LOOP_INTERVAL_SECONDS``. A failing round is logged, never fatal."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from src.core.errors import WarehouseNotFoundError

if TYPE_CHECKING:
    from src.core.services.container import Services

log = logging.getLogger(__name__)

QUEUE_TABLES = ("org_pipeline_configs", "org_scheduled_pipeline_runs", "org_pipeline_execution_queue")


class SchedulerLoop:
    def __init__(
        self,
        services: Services,
        *,
        trigger: Callable[[], Awaitable[Any]],
        process: Callable[[int], Awaitable[Any]],
    ) -> None:
        self._s = services
        self._trigger = trigger
        self._process = process
        self._task: asyncio.Task[None] | None = None
        self._ready = False

    def start(self) -> None:
        if self._s.settings.scheduler_loop_on and self._task is None:
            self._task = asyncio.create_task(self._run(), name="scheduler-loop")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        settings = self._s.settings
        while True:
            try:
                if await self._bootstrapped():
                    await self._trigger()
                    await self._process(settings.scheduler_process_max_items)
            except asyncio.CancelledError:
                raise
            except WarehouseNotFoundError:
                self._ready = False  # the central tables went away (a forced re-bootstrap)
            except Exception:  # the loop must outlive any one bad round
                log.exception("scheduler loop round failed")
            await asyncio.sleep(settings.scheduler_loop_interval_seconds)

    async def _bootstrapped(self) -> bool:
        if not self._ready:
            wh, cat = self._s.warehouse, self._s.catalog
            self._ready = all([await wh.table_exists(cat.ref(n)) for n in QUEUE_TABLES])
        return self._ready
