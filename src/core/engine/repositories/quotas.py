"""Run quotas: one row per org in ``org_usage_quotas`` with the day's, the month's and the
concurrent counters next to the plan's limits.

A slot is reserved with ONE guarded UPDATE that succeeds only if all three counts are under their
limits, rolling the day and the month over (UTC) in the same statement — so there is never a
"today's row" to create, and two reservations can never both take the last slot. Releasing gives
back only the concurrent slot, whenever the run ends (a run that crosses midnight frees the slot
it took; the day's count stays with the day the run was accepted).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from src.core.engine.base import RetryPolicy, TypedParam, Warehouse, with_retries
from src.core.engine.catalog import CentralCatalog


@dataclass(frozen=True, slots=True)
class Usage:
    daily_runs: int
    monthly_runs: int
    concurrent_runs: int
    daily_limit: int
    monthly_limit: int
    concurrent_limit: int


class QuotaRepository:
    def __init__(self, warehouse: Warehouse, catalog: CentralCatalog, *, retry: RetryPolicy) -> None:
        self._wh = warehouse
        self._quotas = catalog.ref("org_usage_quotas").sql
        self._runs = catalog.ref("org_meta_pipeline_runs").sql
        self._retry = retry

    async def reserve(self, org_slug: str, today: date) -> bool:
        """Take a slot if the day's, the month's and the concurrent counts are all under the limits."""
        params = {"org_slug": org_slug, "today": today, "month": today.replace(day=1)}
        sql = f"""
            UPDATE {self._quotas}
            SET daily_runs = IF(usage_date = @today, IFNULL(daily_runs, 0), 0) + 1,
                usage_date = @today,
                monthly_runs = IF(usage_month = @month, IFNULL(monthly_runs, 0), 0) + 1,
                usage_month = @month,
                concurrent_runs = IFNULL(concurrent_runs, 0) + 1,
                last_run_at = CURRENT_TIMESTAMP(),
                updated_at = CURRENT_TIMESTAMP()
            WHERE org_slug = @org_slug
              AND IF(usage_date = @today, IFNULL(daily_runs, 0), 0) < daily_limit
              AND IF(usage_month = @month, IFNULL(monthly_runs, 0), 0) < monthly_limit
              AND IFNULL(concurrent_runs, 0) < concurrent_limit
        """
        return await with_retries(lambda: self._wh.execute(sql, params), what="reserve", policy=self._retry) == 1

    async def unreserve(self, org_slug: str, day: date) -> None:
        """Undo a reservation whose run was then refused: it consumes nothing."""
        params = {"org_slug": org_slug, "day": day, "month": day.replace(day=1)}
        sql = f"""
            UPDATE {self._quotas}
            SET daily_runs = IF(usage_date = @day, GREATEST(IFNULL(daily_runs, 0) - 1, 0), daily_runs),
                monthly_runs = IF(usage_month = @month, GREATEST(IFNULL(monthly_runs, 0) - 1, 0), monthly_runs),
                concurrent_runs = GREATEST(IFNULL(concurrent_runs, 0) - 1, 0),
                updated_at = CURRENT_TIMESTAMP()
            WHERE org_slug = @org_slug
        """
        await with_retries(lambda: self._wh.execute(sql, params), what="unreserve", policy=self._retry)

    async def release(self, org_slug: str) -> None:
        """Give back one concurrent slot (the run ended, whatever its outcome)."""
        sql = f"""
            UPDATE {self._quotas}
            SET concurrent_runs = GREATEST(IFNULL(concurrent_runs, 0) - 1, 0), updated_at = CURRENT_TIMESTAMP()
            WHERE org_slug = @org_slug
        """
        await with_retries(lambda: self._wh.execute(sql, {"org_slug": org_slug}), what="release", policy=self._retry)

    async def usage(self, org_slug: str, today: date) -> Usage | None:
        rows = await self._wh.query(
            f"""
            SELECT IF(usage_date = @today, IFNULL(daily_runs, 0), 0) AS daily_runs,
                   IF(usage_month = @month, IFNULL(monthly_runs, 0), 0) AS monthly_runs,
                   IFNULL(concurrent_runs, 0) AS concurrent_runs,
                   daily_limit, monthly_limit, concurrent_limit
            FROM {self._quotas} WHERE org_slug = @org_slug
            """,
            {"org_slug": org_slug, "today": today, "month": today.replace(day=1)},
        )
        if not rows:
            return None
        r = rows[0]
        return Usage(*(int(r[k] or 0) for k in Usage.__dataclass_fields__))

    async def set_limits(self, org_slug: str, *, daily: int, monthly: int, concurrent: int) -> int:
        return await self._wh.execute(
            f"""
            UPDATE {self._quotas}
            SET daily_limit = @daily, monthly_limit = @monthly, concurrent_limit = @concurrent,
                updated_at = CURRENT_TIMESTAMP()
            WHERE org_slug = @org_slug
            """,
            {"org_slug": org_slug, "daily": daily, "monthly": monthly, "concurrent": concurrent},
        )

    async def resync_concurrent(self, *, quiet_seconds: float) -> int:
        """Set ``concurrent_runs`` to the number of active runs admitted with a slot, for orgs whose
        counters nobody touched for ``quiet_seconds`` (no admission in flight: a reservation updates
        the row). Repairs a count left behind by a process that died between two statements.

        A run still active counts even when its slot is already claimed for release
        (``quota_released``): its release may be in flight, and counting it out here as well would
        free the slot twice. If its process died there, the count is one too high until orphan
        recovery ends the run and the next recount drops it: the safe direction."""
        active = f"""(
            SELECT COUNT(*) FROM {self._runs} AS r
            WHERE r.org_slug = q.org_slug AND r.status IN ('PENDING', 'RUNNING')
              AND r.quota_usage_date IS NOT NULL)"""
        params: dict[str, Any] = {
            "quiet_before": TypedParam("TIMESTAMP", datetime.now(UTC) - timedelta(seconds=quiet_seconds))
        }
        return await self._wh.execute(
            f"""
            UPDATE {self._quotas} AS q
            SET concurrent_runs = {active}, updated_at = CURRENT_TIMESTAMP()
            WHERE q.updated_at <= @quiet_before AND IFNULL(q.concurrent_runs, 0) != {active}
            """,
            params,
        )
