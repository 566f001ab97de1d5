"""Run quotas and run admission: one row per org in ``org_usage_quotas`` with the day's and the
month's counters, the plan's limits, and ``active_runs`` — the org's admitted runs that hold a
concurrent slot, with their pipeline and window.

Admission is ONE guarded UPDATE of that row: it succeeds only if the day's, the month's and the
concurrent counts are under their limits AND no active run of the same pipeline overlaps the
window, rolling the day and the month over (UTC) and appending the run in the same statement. Two
admissions can never both take the last slot or both start an overlapping run: on BigQuery,
concurrent UPDATEs of one row conflict and the loser is retried against the winner's result; on
DuckDB the same conflict is a transaction conflict, retried likewise. Release is ONE guarded UPDATE
that removes the run from ``active_runs`` only if it is still there, so racing enders release a slot
once. Only the concurrent slot is given back; the day's count stays with the day the run was
accepted (a run crossing midnight frees the slot it took).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from src.core.engine.base import RetryPolicy, TypedParam, Warehouse, with_retries
from src.core.engine.catalog import CentralCatalog

_OVERLAPS = """
    x.pipeline_path = @path
    AND IFNULL(x.start_date, DATE '0001-01-01') <= IFNULL(@end_date, DATE '9999-12-31')
    AND IFNULL(x.end_date, DATE '9999-12-31') >= IFNULL(@start_date, DATE '0001-01-01')"""


@dataclass(frozen=True, slots=True)
class ActiveRun:
    run_id: str
    pipeline_path: str
    start_date: date | None
    end_date: date | None
    admitted_at: datetime | None = None
    usage_date: date | None = None
    owner_instance: str | None = None

    def overlaps(self, path: str, start: date | None, end: date | None) -> bool:
        lo, hi = date.min, date.max
        return (
            self.pipeline_path == path
            and (self.start_date or lo) <= (end or hi)
            and (self.end_date or hi) >= (start or lo)
        )


@dataclass(frozen=True, slots=True)
class Usage:
    daily_runs: int
    monthly_runs: int
    concurrent_runs: int
    daily_limit: int
    monthly_limit: int
    concurrent_limit: int
    active: tuple[ActiveRun, ...] = field(default=())

    def refuses(self) -> bool:
        """Whether a limit is reached (the day's, the month's or the concurrent one)."""
        return (
            self.daily_runs >= self.daily_limit
            or self.monthly_runs >= self.monthly_limit
            or self.concurrent_runs >= self.concurrent_limit
        )


_COUNTS = ("daily_runs", "monthly_runs", "concurrent_runs", "daily_limit", "monthly_limit", "concurrent_limit")


class QuotaRepository:
    def __init__(self, warehouse: Warehouse, catalog: CentralCatalog, *, retry: RetryPolicy) -> None:
        self._wh = warehouse
        self._quotas = catalog.ref("org_usage_quotas").sql
        self._runs = catalog.ref("org_meta_pipeline_runs").sql
        self._retry = retry

    async def _execute(self, sql: str, params: dict[str, Any], what: str) -> int:
        return await with_retries(lambda: self._wh.execute(sql, params), what=what, policy=self._retry)

    async def admit(self, org_slug: str, run: ActiveRun, today: date) -> bool:
        """Take a slot for ``run`` if every limit allows it and no active run of its pipeline
        overlaps its window (one guarded UPDATE). False: refused (see ``usage`` for why)."""
        params = {
            "org_slug": org_slug,
            "today": today,
            "month": today.replace(day=1),
            "run_id": run.run_id,
            "path": run.pipeline_path,
            "start_date": TypedParam("DATE", run.start_date),
            "end_date": TypedParam("DATE", run.end_date),
            "now": TypedParam("TIMESTAMP", datetime.now(UTC)),
            "owner": TypedParam("STRING", run.owner_instance),
        }
        sql = f"""
            UPDATE {self._quotas} AS q
            SET daily_runs = IF(q.usage_date = @today, IFNULL(q.daily_runs, 0), 0) + 1,
                usage_date = @today,
                monthly_runs = IF(q.usage_month = @month, IFNULL(q.monthly_runs, 0), 0) + 1,
                usage_month = @month,
                active_runs = ARRAY_CONCAT(IFNULL(q.active_runs, []), [STRUCT(
                    @run_id AS run_id, @path AS pipeline_path, @start_date AS start_date,
                    @end_date AS end_date, @now AS admitted_at, @today AS usage_date,
                    @owner AS owner_instance)]),
                concurrent_runs = IFNULL(ARRAY_LENGTH(q.active_runs), 0) + 1,
                last_run_at = @now,
                updated_at = @now
            WHERE q.org_slug = @org_slug
              AND IF(q.usage_date = @today, IFNULL(q.daily_runs, 0), 0) < q.daily_limit
              AND IF(q.usage_month = @month, IFNULL(q.monthly_runs, 0), 0) < q.monthly_limit
              AND IFNULL(ARRAY_LENGTH(q.active_runs), 0) < q.concurrent_limit
              AND NOT EXISTS (SELECT 1 FROM UNNEST(q.active_runs) AS x WHERE {_OVERLAPS})
        """
        return await self._execute(sql, params, "admit run") == 1

    async def release(self, org_slug: str, run_id: str) -> bool:
        """Give back the run's concurrent slot, once: True only for the call that removed it."""
        sql = f"""
            UPDATE {self._quotas} AS q
            SET active_runs = ARRAY(SELECT x FROM UNNEST(q.active_runs) AS x WHERE x.run_id != @run_id),
                concurrent_runs = (SELECT COUNT(*) FROM UNNEST(q.active_runs) AS x WHERE x.run_id != @run_id),
                updated_at = CURRENT_TIMESTAMP()
            WHERE q.org_slug = @org_slug AND EXISTS (SELECT 1 FROM UNNEST(q.active_runs) AS x WHERE x.run_id = @run_id)
        """
        params = {"org_slug": org_slug, "run_id": run_id}
        return await self._execute(sql, params, "release slot") == 1

    async def refund(self, org_slug: str, run_id: str, day: date) -> bool:
        """Undo an admission whose run could not be recorded: the slot and the day's and month's
        counts (it consumed nothing). Guarded like ``release``."""
        sql = f"""
            UPDATE {self._quotas} AS q
            SET active_runs = ARRAY(SELECT x FROM UNNEST(q.active_runs) AS x WHERE x.run_id != @run_id),
                concurrent_runs = (SELECT COUNT(*) FROM UNNEST(q.active_runs) AS x WHERE x.run_id != @run_id),
                daily_runs = IF(q.usage_date = @day, GREATEST(IFNULL(q.daily_runs, 0) - 1, 0), q.daily_runs),
                monthly_runs = IF(q.usage_month = @month, GREATEST(IFNULL(q.monthly_runs, 0) - 1, 0), q.monthly_runs),
                updated_at = CURRENT_TIMESTAMP()
            WHERE q.org_slug = @org_slug AND EXISTS (SELECT 1 FROM UNNEST(q.active_runs) AS x WHERE x.run_id = @run_id)
        """
        params = {"org_slug": org_slug, "run_id": run_id, "day": day, "month": day.replace(day=1)}
        return await self._execute(sql, params, "refund admission") == 1

    async def usage(self, org_slug: str, today: date) -> Usage | None:
        rows = await self._wh.query(
            f"""
            SELECT IF(usage_date = @today, IFNULL(daily_runs, 0), 0) AS daily_runs,
                   IF(usage_month = @month, IFNULL(monthly_runs, 0), 0) AS monthly_runs,
                   IFNULL(ARRAY_LENGTH(active_runs), 0) AS concurrent_runs,
                   daily_limit, monthly_limit, concurrent_limit, active_runs
            FROM {self._quotas} WHERE org_slug = @org_slug
            """,
            {"org_slug": org_slug, "today": today, "month": today.replace(day=1)},
        )
        if not rows:
            return None
        r = rows[0]
        counts = {k: int(r[k] or 0) for k in _COUNTS}
        return Usage(**counts, active=tuple(_active(a) for a in (r.get("active_runs") or [])))

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

    async def stale_slots(self, *, older_than_seconds: float) -> list[tuple[str, str, date, bool]]:
        """(org, run id, day admitted, whether its run row exists) of slots held for longer than
        ``older_than_seconds`` by runs that are not active: a process died between ending a run and
        releasing its slot (row exists: release it), or between admitting a run and recording it
        (no row: the run was never accepted, refund it). A read: nothing is written here."""
        rows = await self._wh.query(
            f"""
            SELECT q.org_slug, x.run_id, x.usage_date,
                   EXISTS (SELECT 1 FROM {self._runs} AS r
                           WHERE r.org_slug = q.org_slug AND r.pipeline_logging_id = x.run_id) AS recorded
            FROM {self._quotas} AS q, UNNEST(q.active_runs) AS x
            WHERE x.admitted_at < @cutoff
              AND NOT EXISTS (
                SELECT 1 FROM {self._runs} AS r
                WHERE r.org_slug = q.org_slug AND r.pipeline_logging_id = x.run_id
                  AND r.status IN ('PENDING', 'RUNNING'))
            """,
            {"cutoff": TypedParam("TIMESTAMP", datetime.now(UTC) - timedelta(seconds=older_than_seconds))},
        )
        return [(str(r["org_slug"]), str(r["run_id"]), r["usage_date"], bool(r["recorded"])) for r in rows]


def _active(value: dict[str, Any]) -> ActiveRun:
    return ActiveRun(
        run_id=str(value.get("run_id")),
        pipeline_path=str(value.get("pipeline_path")),
        start_date=value.get("start_date"),
        end_date=value.get("end_date"),
        admitted_at=value.get("admitted_at"),
        usage_date=value.get("usage_date"),
        owner_instance=value.get("owner_instance"),
    )
