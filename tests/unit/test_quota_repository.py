"""The quota statements on a real DuckDB file (no service): day and month roll-over in UTC, and a
run that crosses midnight gives back the slot it took."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from pathlib import Path

from src.core.engine.base import RetryPolicy
from src.core.engine.catalog import CentralCatalog
from src.core.engine.duckdb_backend import DuckDBWarehouse
from src.core.engine.repositories.quotas import QuotaRepository
from src.core.engine.rows import insert_statement
from tests.server import REPO


async def _repo(tmp: Path) -> tuple[DuckDBWarehouse, QuotaRepository]:
    wh = DuckDBWarehouse(path=tmp / "q.duckdb", project="convergence-local")
    await wh.start()
    catalog = CentralCatalog(REPO / "configs", "convergence-local")
    await wh.create_dataset("organizations")
    for name, table in catalog.tables.items():
        await wh.create_table(catalog.ref(name), table.schema)
    row = {
        "org_slug": "acme",
        "usage_date": date(2026, 1, 31),
        "daily_runs": 0,
        "usage_month": date(2026, 1, 1),
        "monthly_runs": 0,
        "concurrent_runs": 0,
        "daily_limit": 2,
        "monthly_limit": 3,
        "concurrent_limit": 1,
        "updated_at": datetime.now(UTC),
    }
    await wh.execute(*insert_statement(catalog.ref("org_usage_quotas"), catalog.schema("org_usage_quotas"), row))
    return wh, QuotaRepository(wh, catalog, retry=RetryPolicy(2, 0.01))


def test_limits_roll_over_per_utc_day_and_month(tmp_path: Path) -> None:
    async def scenario() -> None:
        wh, repo = await _repo(tmp_path)
        jan31, feb1 = date(2026, 1, 31), date(2026, 2, 1)
        assert await repo.reserve("acme", jan31)
        assert not await repo.reserve("acme", jan31)  # concurrent limit 1
        await repo.release("acme")
        assert await repo.reserve("acme", jan31)
        await repo.release("acme")
        assert not await repo.reserve("acme", jan31)  # daily limit 2
        usage = await repo.usage("acme", jan31)
        assert usage is not None and (usage.daily_runs, usage.monthly_runs) == (2, 2)
        assert await repo.reserve("acme", feb1)  # a new day and a new month
        usage = await repo.usage("acme", feb1)
        assert usage is not None and (usage.daily_runs, usage.monthly_runs, usage.concurrent_runs) == (1, 1, 1)
        await wh.close()

    asyncio.run(scenario())


def test_a_run_crossing_midnight_releases_the_slot_it_took(tmp_path: Path) -> None:
    async def scenario() -> None:
        wh, repo = await _repo(tmp_path)
        assert await repo.reserve("acme", date(2026, 1, 31))  # accepted at 23:59
        await repo.release("acme")  # finished after midnight
        usage = await repo.usage("acme", date(2026, 2, 1))
        assert usage is not None and usage.concurrent_runs == 0 and usage.daily_runs == 0
        assert await repo.reserve("acme", date(2026, 2, 1))
        await wh.close()

    asyncio.run(scenario())


def test_unreserve_takes_back_a_refused_run(tmp_path: Path) -> None:
    async def scenario() -> None:
        wh, repo = await _repo(tmp_path)
        day = date(2026, 1, 31)
        assert await repo.reserve("acme", day)
        await repo.unreserve("acme", day)
        usage = await repo.usage("acme", day)
        assert usage is not None and (usage.daily_runs, usage.monthly_runs, usage.concurrent_runs) == (0, 0, 0)
        await wh.close()

    asyncio.run(scenario())


def test_a_leaked_slot_is_recounted_once_the_org_is_quiet(tmp_path: Path) -> None:
    async def scenario() -> None:
        wh, repo = await _repo(tmp_path)
        day = date(2026, 1, 31)
        assert await repo.reserve("acme", day)  # a slot taken, then the process died: no run row
        assert await repo.resync_concurrent(quiet_seconds=3600) == 0  # counters just changed: hands off
        assert await repo.resync_concurrent(quiet_seconds=0) == 1
        usage = await repo.usage("acme", day)
        assert usage is not None and usage.concurrent_runs == 0
        assert usage.daily_runs == 1  # the day's count is history, not repaired away
        assert await repo.resync_concurrent(quiet_seconds=0) == 0  # nothing left to repair
        await wh.close()

    asyncio.run(scenario())
