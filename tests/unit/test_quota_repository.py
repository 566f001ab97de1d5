"""The quota statements on a real DuckDB file (no service): admission is one guarded UPDATE of the
org's quota row (limits and overlapping windows checked in it), day and month roll over in UTC, a
run that crosses midnight gives back the slot it took, a slot comes back exactly once and before
anyone can read its run as ended, and slots nobody holds are found and returned."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from src.core.engine.base import RetryPolicy
from src.core.engine.catalog import CentralCatalog
from src.core.engine.duckdb_backend import DuckDBWarehouse
from src.core.engine.repositories.quotas import ActiveRun, QuotaRepository
from src.core.engine.repositories.runs import NewRun, RunRepository
from src.core.engine.rows import insert_statement
from src.core.services.container import build_services
from src.core.services.run_recorder import end_run
from src.core.services.setup import SetupService
from src.core.settings import Settings
from tests.server import REPO

DAY = date(2026, 1, 31)
CATALOG = CentralCatalog(REPO / "configs", "convergence-local")


class _ObservedWarehouse(DuckDBWarehouse):
    """The real DuckDB warehouse, noting the org's slot count as each run's final state is written."""

    slots_when_ended: list[int]

    async def execute(self, sql: str, params: dict[str, Any] | None = None, **kw: Any) -> int:
        if "completed_at = CURRENT_TIMESTAMP()" in sql:
            table = CATALOG.ref("org_usage_quotas").sql
            rows = await self.query(f"SELECT IFNULL(ARRAY_LENGTH(active_runs), 0) AS n FROM {table}")
            self.slots_when_ended.append(int(rows[0]["n"]))
        return await super().execute(sql, params, **kw)


async def _repo(tmp: Path) -> tuple[_ObservedWarehouse, QuotaRepository]:
    wh = _ObservedWarehouse(path=tmp / "q.duckdb", project="convergence-local")
    wh.slots_when_ended = []
    await wh.start()
    await wh.create_dataset("organizations")
    for name, table in CATALOG.tables.items():
        await wh.create_table(CATALOG.ref(name), table.schema)
    row = {
        "org_slug": "acme",
        "usage_date": DAY,
        "daily_runs": 0,
        "usage_month": DAY.replace(day=1),
        "monthly_runs": 0,
        "concurrent_runs": 0,
        "daily_limit": 2,
        "monthly_limit": 3,
        "concurrent_limit": 1,
        "updated_at": datetime.now(UTC),
    }
    await wh.execute(*insert_statement(CATALOG.ref("org_usage_quotas"), CATALOG.schema("org_usage_quotas"), row))
    return wh, QuotaRepository(wh, CATALOG, retry=RetryPolicy(3, 0.01))


def _slot(path: str = "gcp/cost/billing", start: date | None = DAY, end: date | None = DAY) -> ActiveRun:
    return ActiveRun(f"run-{uuid.uuid4().hex[:8]}", path, start, end, owner_instance="here")


def test_limits_roll_over_per_utc_day_and_month(tmp_path: Path) -> None:
    async def scenario() -> None:
        wh, repo = await _repo(tmp_path)
        jan31, feb1 = date(2026, 1, 31), date(2026, 2, 1)
        first, second = _slot(), _slot()
        assert await repo.admit("acme", first, jan31)
        assert not await repo.admit("acme", _slot("other/p/x"), jan31)  # concurrent limit 1
        assert await repo.release("acme", first.run_id)
        assert await repo.admit("acme", second, jan31)
        assert await repo.release("acme", second.run_id)
        assert not await repo.admit("acme", _slot(), jan31)  # daily limit 2
        usage = await repo.usage("acme", jan31)
        assert usage is not None and (usage.daily_runs, usage.monthly_runs) == (2, 2) and usage.refuses()
        assert await repo.admit("acme", _slot(), feb1)  # a new day and a new month
        usage = await repo.usage("acme", feb1)
        assert usage is not None and (usage.daily_runs, usage.monthly_runs, usage.concurrent_runs) == (1, 1, 1)
        await wh.close()

    asyncio.run(scenario())


def test_an_overlapping_window_of_the_same_pipeline_is_refused_in_the_same_statement(tmp_path: Path) -> None:
    async def scenario() -> None:
        wh, repo = await _repo(tmp_path)
        await repo.set_limits("acme", daily=10, monthly=10, concurrent=5)
        running = _slot(start=DAY - timedelta(days=2), end=DAY)
        assert await repo.admit("acme", running, DAY)
        assert not await repo.admit("acme", _slot(start=DAY, end=DAY + timedelta(days=1)), DAY)  # shares DAY
        assert not await repo.admit("acme", _slot(start=None, end=None), DAY)  # no window: overlaps all
        assert await repo.admit("acme", _slot(start=DAY + timedelta(days=1), end=DAY + timedelta(days=2)), DAY)
        assert await repo.admit("acme", _slot("aws/cost/billing"), DAY)  # another pipeline
        usage = await repo.usage("acme", DAY)
        assert usage is not None and usage.daily_runs == 3  # refusals consumed nothing
        assert [a.run_id for a in usage.active if a.overlaps("gcp/cost/billing", DAY, DAY)] == [running.run_id]
        await wh.close()

    asyncio.run(scenario())


def test_concurrent_admissions_take_the_last_slot_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        wh, repo = await _repo(tmp_path)
        results = await asyncio.gather(*(repo.admit("acme", _slot(f"p/{i}/x"), DAY) for i in range(6)))
        assert sorted(results) == [False] * 5 + [True]
        usage = await repo.usage("acme", DAY)
        assert usage is not None and (usage.daily_runs, usage.concurrent_runs) == (1, 1)
        await wh.close()

    asyncio.run(scenario())


def test_a_run_crossing_midnight_releases_the_slot_it_took(tmp_path: Path) -> None:
    async def scenario() -> None:
        wh, repo = await _repo(tmp_path)
        slot = _slot()
        assert await repo.admit("acme", slot, date(2026, 1, 31))  # accepted at 23:59
        assert await repo.release("acme", slot.run_id)  # finished after midnight
        usage = await repo.usage("acme", date(2026, 2, 1))
        assert usage is not None and usage.concurrent_runs == 0 and usage.daily_runs == 0
        assert await repo.admit("acme", _slot(), date(2026, 2, 1))
        await wh.close()

    asyncio.run(scenario())


def test_refund_takes_back_an_admission_that_was_never_recorded(tmp_path: Path) -> None:
    async def scenario() -> None:
        wh, repo = await _repo(tmp_path)
        slot = _slot()
        assert await repo.admit("acme", slot, DAY)
        assert await repo.refund("acme", slot.run_id, DAY)
        assert not await repo.refund("acme", slot.run_id, DAY)  # once
        usage = await repo.usage("acme", DAY)
        assert usage is not None and (usage.daily_runs, usage.monthly_runs, usage.concurrent_runs) == (0, 0, 0)
        await wh.close()

    asyncio.run(scenario())


async def _running_run(
    wh: DuckDBWarehouse, quotas: QuotaRepository, *, path: str | None = None
) -> tuple[RunRepository, str]:
    runs = RunRepository(wh, CATALOG, retry=RetryPolicy(2, 0.01))
    slot = _slot(path or f"gcp/cost/{uuid.uuid4().hex[:8]}")  # a pipeline of its own: no overlap
    assert await quotas.admit("acme", slot, DAY)
    new = NewRun(slot.run_id, "acme", "p", slot.pipeline_path, "test", {}, DAY, DAY, "here", quota_usage_date=DAY)
    await runs.insert(new)
    await runs.insert(new)  # a retried INSERT adds no second row
    rows = await wh.query(
        f"SELECT COUNT(*) AS n FROM {CATALOG.ref('org_meta_pipeline_runs').sql} WHERE pipeline_logging_id = @id",
        {"id": slot.run_id},
    )
    assert rows[0]["n"] == 1
    return runs, slot.run_id


def test_a_run_reads_as_ended_only_after_its_slot_is_back(tmp_path: Path) -> None:
    """A scheduler that waits for COMPLETED and then starts the next run must not be refused."""

    async def scenario() -> None:
        wh, quotas = await _repo(tmp_path)
        runs, run_id = await _running_run(wh, quotas)
        ended = await end_run(runs, quotas, pipeline_logging_id=run_id, org_slug="acme", status="COMPLETED", error=None)
        assert ended
        assert wh.slots_when_ended == [0]
        assert await quotas.admit("acme", _slot(), DAY)  # concurrent limit 1: the next run is admitted
        await wh.close()

    asyncio.run(scenario())


def test_racing_enders_give_the_slot_back_once(tmp_path: Path) -> None:
    """The executor and orphan recovery ending the same run while another run holds the other slot:
    one of them ends it, and the other run's slot stays held."""

    async def scenario() -> None:
        wh, quotas = await _repo(tmp_path)
        await quotas.set_limits("acme", daily=10, monthly=10, concurrent=2)
        runs, run_id = await _running_run(wh, quotas)
        _, other_id = await _running_run(wh, quotas)
        results = await asyncio.gather(
            *(
                end_run(runs, quotas, pipeline_logging_id=run_id, org_slug="acme", status=status, error=None)
                for status in ("COMPLETED", "FAILED", "FAILED")
            )
        )
        assert sorted(results) == [False, False, True]
        usage = await quotas.usage("acme", DAY)
        assert usage is not None and [a.run_id for a in usage.active] == [other_id]
        row = await runs.get(other_id, "acme")
        assert row is not None and row["status"] == "RUNNING"
        await wh.close()

    asyncio.run(scenario())


def test_slots_nobody_holds_are_found_and_an_admission_in_flight_is_left_alone(tmp_path: Path) -> None:
    """Between its admission and its run row an admission holds a slot no run row shows yet: the
    sweep leaves it alone until it is older than the lease; then a slot whose run never got a row
    is refunded, and one whose run ended is released — each once."""

    async def scenario() -> None:
        settings = Settings(
            duckdb_path=tmp_path / "warehouse.duckdb",
            local_kms_key_path=tmp_path / "kms.key",
            gcp_project_id="convergence-local",
            run_lease_seconds=30,
        )
        services = build_services(settings)
        await services.warehouse.start()
        try:
            setup = SetupService(services)
            await setup.bootstrap(force_recreate_dataset=False, force_recreate_tables=False)
            org = {"org_slug": "acme", "company_name": "Acme", "admin_email": "ops@acme.example"}
            await setup.onboard({**org, "subscription_plan": "PROFESSIONAL"})
            today = datetime.now(UTC).date()
            in_flight = _slot("gcp/cost/a", today, today)
            assert await services.quotas.admit("acme", in_flight, today)  # no run row yet
            await services.run_service.recover_orphans()  # the periodic pass
            usage = await services.quotas.usage("acme", today)
            assert usage is not None and [a.run_id for a in usage.active] == [in_flight.run_id]
            stale = await services.quotas.stale_slots(older_than_seconds=0)
            assert stale == [("acme", in_flight.run_id, today, False)]
            await services.run_service.recover_orphans(at_start=True)  # a restart: nothing is in flight
            usage = await services.quotas.usage("acme", today)
            assert usage is not None and (usage.concurrent_runs, usage.daily_runs) == (0, 0)  # refunded
        finally:
            await services.kms.close()
            await services.warehouse.close()

    asyncio.run(scenario())


def test_a_slot_left_by_a_process_that_died_after_ending_its_run_is_released(tmp_path: Path) -> None:
    async def scenario() -> None:
        wh, quotas = await _repo(tmp_path)
        runs, run_id = await _running_run(wh, quotas)
        # The run ended (its final state written) but the process died before the release.
        assert await runs.finish(
            pipeline_logging_id=run_id, org_slug="acme", status="COMPLETED", error=None, failed_step=None,
            rows_processed=0,
        )  # fmt: skip
        assert await quotas.stale_slots(older_than_seconds=3600) == []  # too recent to judge
        assert await quotas.stale_slots(older_than_seconds=0) == [("acme", run_id, DAY, True)]
        assert await quotas.release("acme", run_id)
        assert await quotas.stale_slots(older_than_seconds=0) == []
        usage = await quotas.usage("acme", DAY)
        assert usage is not None and (usage.concurrent_runs, usage.daily_runs) == (0, 1)  # the run counted
        await wh.close()

    asyncio.run(scenario())
