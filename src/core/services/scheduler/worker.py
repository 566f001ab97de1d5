"""Queue workers: claim due items and run them, one attempt each.

Queue item states (``org_pipeline_execution_queue.state``)::

    QUEUED ─┐          ┌─ a run of an earlier attempt COMPLETED ──────────► COMPLETED (no new run)
    RETRY  ─┼─claim──► RUNNING ─ run COMPLETED ─────────────────────────────► COMPLETED
            │          │  ─ run FAILED / 409 / 5xx, attempts left ──────────► RETRY  (next_attempt_at = backoff)
            │          │  ─ the same, no attempts left; or 403 / 404 / 422 ─► FAILED (last_error)
            │          │  ─ quota 429 ─► RETRY at the quota's reset (attempt refunded, requeues + 1);
            │          │                 FAILED once requeues reach QUEUE_MAX_QUOTA_REQUEUES
            │          │  ─ a run of an earlier attempt still active ──────► RETRY (backoff; refunded)
            │          │  ─ schedule paused or deleted ─────────────────────► CANCELLED
            └─claim────┘  lease expired (its worker died): claimed again, next attempt, new owner
    QUEUED | RETRY ─ schedule paused or deleted ─► CANCELLED

COMPLETED, FAILED and CANCELLED are final. Checking the item's runs before starting one means a
worker that dies (or stalls past its lease) after its run ended never causes a second run, and two
attempts of one item never run side by side (the run admission's 409 covers the rest of the race).

Statements: a ``process`` call claims with ONE guarded UPDATE as many items as it has free workers
(``QueueRepository.claim``; again when a worker frees up), under one owner token for the call; the
instance's ``QueueKeeper`` renews all its leases in one UPDATE per interval and ends attempts in
batches. Each attempt is a normal run through ``RunService.start`` (quotas, 409, run logs,
notifications) with ``trigger_by = "scheduler"``, ``schedule_id`` and ``queue_item_id``; the worker
waits for the run's final status. Backoff: ``QUEUE_BACKOFF_BASE_SECONDS * 2^(attempt-1)``, at most
``QUEUE_BACKOFF_MAX_SECONDS``. Scheduled runs count against quotas like any accepted run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from src.core.engine.repositories.queue import Finish, QueueRepository
from src.core.engine.repositories.schedules import ScheduleRepository
from src.core.errors import (
    ConflictError,
    NotFoundError,
    ServiceError,
    TooManyRequestsError,
)
from src.core.services.runs import Caller
from src.core.services.scheduler.keeper import QueueKeeper

if TYPE_CHECKING:
    from src.core.services.container import Services

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Outcome:
    queue_item_id: str
    state: str
    attempts: int
    pipeline_logging_id: str | None = None
    error: str | None = None


class QueueWorkers:
    def __init__(self, services: Services, schedules: ScheduleRepository, queue: QueueRepository) -> None:
        self._s = services
        self.schedules = schedules
        self.queue = queue
        self.keeper = QueueKeeper(queue, lease_seconds=services.settings.queue_lease_seconds)

    # --- workers -------------------------------------------------------------------------------
    async def process(self, max_items: int) -> dict[str, Any]:
        """Claim and run up to ``max_items`` items, ``SCHEDULER_WORKERS`` at a time; answers when
        their attempts have ended."""
        settings = self._s.settings
        owner = f"{settings.instance_id}/{secrets.token_hex(6)}"
        lease = timedelta(seconds=settings.queue_lease_seconds)
        workers = min(settings.scheduler_workers, max_items)
        budget, exhausted = max_items, False
        started: set[str] = set()
        running: set[asyncio.Task[Outcome]] = set()
        outcomes: list[Outcome] = []
        self.keeper.hold(owner)
        try:
            while True:
                free = min(workers - len(running), budget)
                if free > 0 and not exhausted:
                    now = _now()
                    held = await self.queue.claim(owner=owner, now=now, lease_until=now + lease, limit=free)
                    new = [item for item in held if item["queue_item_id"] not in started]
                    exhausted = len(new) < free  # nothing more is due now
                    budget -= len(new)
                    for item in new:
                        started.add(item["queue_item_id"])
                        running.add(asyncio.create_task(self._attempt(item, owner)))
                if not running:
                    break
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                outcomes.extend(task.result() for task in done)
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            self.keeper.release(owner)
        by_state = dict(Counter(o.state for o in outcomes))  # LOST: the lease changed hands mid-attempt
        return {
            "processed": len(outcomes),
            "by_state": by_state,
            "items": [
                {
                    "queue_item_id": o.queue_item_id,
                    "state": o.state,
                    "attempts": o.attempts,
                    "pipeline_logging_id": o.pipeline_logging_id,
                    "error": o.error,
                }
                for o in outcomes
            ],
        }

    async def _attempt(self, item: dict[str, Any], owner: str) -> Outcome:
        schedule_id = item["schedule_id"]
        attempts = int(item["attempts"] or 0)
        max_attempts = int(item["max_attempts"] or self._s.settings.schedule_default_max_attempts)
        if item["completed_run_id"]:  # an earlier attempt's run completed; its worker did not get to say so
            return await self._end(item, owner, "COMPLETED", None, run_id=item["completed_run_id"])
        if item["active_run_id"]:  # an earlier attempt's run is still going: never a second one beside it
            error = f"the run {item['active_run_id']} of an earlier attempt is still active"
            return await self._end(item, owner, "RETRY", error, next_at=self._backoff(attempts), refund=True)
        if attempts > max_attempts:  # the last allowed attempt's worker was lost
            return await self._end(item, owner, "FAILED", f"gave up after {max_attempts} attempts (worker lost)")
        if schedule_id is not None and not item["schedule_active"]:
            reason = "schedule deleted" if item["schedule_active"] is None else "schedule paused"
            return await self._end(item, owner, "CANCELLED", reason)
        try:
            started = await self._start_run(item)
        except TooManyRequestsError as exc:  # a quota: wait for its reset, do not spend an attempt
            return await self._requeue(item, owner, exc)
        except ServiceError as exc:
            error = f"{exc.status_code} {exc.code}: {exc.message}"
            if exc.status_code < 500 and not isinstance(exc, ConflictError):  # 403/404/422: will not get better
                return await self._end(item, owner, "FAILED", error)
            return await self._retry_or_fail(item, owner, error, None)
        except Exception as exc:  # an unexpected bug must not make the item spin: back off like a failure
            log.exception("scheduled run could not start", extra={"queue_item_id": item["queue_item_id"]})
            return await self._retry_or_fail(item, owner, f"internal error: {type(exc).__name__}", None)
        run_id = started["pipeline_logging_id"]
        status, run_error = await self._wait_for_run(item, run_id)
        if status == "COMPLETED":
            return await self._end(item, owner, "COMPLETED", None, run_id=run_id)
        return await self._retry_or_fail(item, owner, f"run {run_id} ended {status}: {run_error or 'no error'}", run_id)

    async def _requeue(self, item: dict[str, Any], owner: str, exc: TooManyRequestsError) -> Outcome:
        """Back in the queue at the quota's reset, a bounded number of times."""
        requeues, limit = int(item.get("requeues") or 0), self._s.settings.queue_max_quota_requeues
        error = f"429 {exc.code}: {exc.message}"
        if requeues >= limit:
            return await self._end(item, owner, "FAILED", f"{error} (waited for the quota {requeues} times)")
        wait = _retry_after(exc, self._s.settings.quota_retry_after_seconds)
        return await self._end(
            item, owner, "RETRY", f"{error} (requeue {requeues + 1} of {limit})", next_at=_now() + wait,
            refund=True, requeued=True,
        )  # fmt: skip

    async def _start_run(self, item: dict[str, Any]) -> dict[str, Any]:
        parts = str(item["pipeline_path"]).split("/")
        if len(parts) != 3:
            raise NotFoundError(f"no runnable pipeline {item['pipeline_path']!r}", code="pipeline_not_found")
        pipeline = self._s.store.runnable(*parts)
        return await self._s.run_service.start(
            pipeline,
            caller=Caller(org_slug=item["org_slug"]),
            params=json.loads(item["parameters"]) if item["parameters"] else {},
            trigger_by="scheduler",
            schedule_id=item["schedule_id"],
            queue_item_id=item["queue_item_id"],
        )

    async def _wait_for_run(self, item: dict[str, Any], run_id: str) -> tuple[str, str | None]:
        """The run's final (status, error). Its lease is renewed by the keeper meanwhile."""
        await self._s.run_service.wait_finished(run_id)
        run = await self._s.runs.get(run_id, item["org_slug"])
        if run is None:
            return "FAILED", "run row not found"
        return str(run["status"]), run.get("error_message")

    async def _retry_or_fail(self, item: dict[str, Any], owner: str, error: str, run_id: str | None) -> Outcome:
        attempts = int(item["attempts"] or 0)
        max_attempts = int(item["max_attempts"] or self._s.settings.schedule_default_max_attempts)
        if attempts >= max_attempts:
            return await self._end(
                item, owner, "FAILED", f"attempt {attempts} of {max_attempts}: {error}", run_id=run_id
            )
        return await self._end(
            item, owner, "RETRY", f"attempt {attempts} of {max_attempts}: {error}", run_id=run_id,
            next_at=self._backoff(attempts),
        )  # fmt: skip

    def _backoff(self, attempts: int) -> datetime:
        s = self._s.settings
        delay = min(s.queue_backoff_max_seconds, s.queue_backoff_base_seconds * 2 ** max(attempts - 1, 0))
        return _now() + timedelta(seconds=delay)

    async def _end(
        self,
        item: dict[str, Any],
        owner: str,
        state: str,
        error: str | None,
        *,
        run_id: str | None = None,
        next_at: datetime | None = None,
        refund: bool = False,
        requeued: bool = False,
    ) -> Outcome:
        item_id, org_slug = item["queue_item_id"], item["org_slug"]
        attempts = int(item["attempts"] or 0) - int(refund)
        finish = Finish(item_id, owner, state, error, run_id, next_at, refund_attempt=refund, requeued=requeued)
        if not await self.keeper.finish(finish):
            log.warning("queue item changed hands before its attempt ended", extra={"queue_item_id": item_id})
            return Outcome(item_id, "LOST", attempts, run_id, error)
        log.info(
            "queue item attempt ended",
            extra={"queue_item_id": item_id, "org_slug": org_slug, "state": state, "attempts": attempts,
                   "pipeline_logging_id": run_id, "error": error},
        )  # fmt: skip
        return Outcome(item_id, state, attempts, run_id, error)


def _retry_after(exc: TooManyRequestsError, default: int) -> timedelta:
    try:
        seconds = int(exc.headers.get("Retry-After", default))
    except ValueError:
        seconds = default
    return timedelta(seconds=max(1, seconds))
