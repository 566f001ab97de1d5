"""The quota statements on a real DuckDB file (no service): day and month roll-over in UTC, a run
that crosses midnight gives back the slot it took, and ending a run gives its slot back exactly once
and before anyone can read the run as ended."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from src.core.engine.base import RetryPolicy
from src.core.engine.catalog import CentralCatalog
from src.core.engine.duckdb_backend import DuckDBWarehouse
from src.core.engine.repositories.quotas import QuotaRepository
from src.core.engine.repositories.runs import NewRun, RunRepository
from src.core.engine.rows import insert_statement
from src.core.run_types import RunInfo
from src.core.services.container import build_services
from src.core.services.run_recorder import end_run
from src.core.services.setup import SetupService
from src.core.settings import Settings
from tests.server import REPO

DAY = date(2026, 1, 31)


class _ObservedWarehouse(DuckDBWarehouse):
    """The real DuckDB warehouse, noting the org's slot count as each run's final state is written."""

    slots_when_ended: list[int]
    quotas_table = CentralCatalog(REPO / "configs", "convergence-local").ref("org_usage_quotas").sql

    async def execute(self, sql: str, params: dict[str, Any] | None = None) -> int:
        if "completed_at = CURRENT_TIMESTAMP()" in sql:
            rows = await self.query(f"SELECT concurrent_runs FROM {self.quotas_table}")
            self.slots_when_ended.append(int(rows[0]["concurrent_runs"]))
        return await super().execute(sql, params)


async def _repo(tmp: Path) -> tuple[DuckDBWarehouse, QuotaRepository]:
    wh = _ObservedWarehouse(path=tmp / "q.duckdb", project="convergence-local")
    wh.slots_when_ended = []
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


async def _admitted_running_run(wh: DuckDBWarehouse, quotas: QuotaRepository) -> tuple[RunRepository, str]:
    runs = RunRepository(wh, CentralCatalog(REPO / "configs", "convergence-local"), retry=RetryPolicy(2, 0.01))
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    assert await quotas.reserve("acme", DAY)
    path = f"gcp/cost/{run_id}"  # a pipeline of its own: no overlap with the other runs
    new = NewRun(run_id, "acme", "p", path, "test", {}, DAY, DAY, "here", quota_usage_date=DAY)
    assert (await runs.admit(new)).admitted
    info = RunInfo(run_id, "p", path, "acme", "test", record=True)
    assert await runs.mark_running(info, "here")
    return runs, run_id


async def _two_running_runs(wh: DuckDBWarehouse, quotas: QuotaRepository) -> tuple[RunRepository, str, str]:
    """Both slots of a concurrent limit of 2 held by running runs."""
    await quotas.set_limits("acme", daily=10, monthly=10, concurrent=2)
    runs, first = await _admitted_running_run(wh, quotas)
    _, second = await _admitted_running_run(wh, quotas)
    return runs, first, second


def test_a_run_reads_as_ended_only_after_its_slot_is_back(tmp_path: Path) -> None:
    """A scheduler that waits for COMPLETED and then starts the next run must not be refused."""

    async def scenario() -> None:
        wh, quotas = await _repo(tmp_path)
        assert isinstance(wh, _ObservedWarehouse)
        runs, run_id = await _admitted_running_run(wh, quotas)
        ended = await end_run(runs, quotas, pipeline_logging_id=run_id, org_slug="acme", status="COMPLETED", error=None)
        assert ended
        assert wh.slots_when_ended == [0]
        assert await quotas.reserve("acme", DAY)  # concurrent limit 1: the next run is admitted
        await wh.close()

    asyncio.run(scenario())


def test_racing_enders_give_the_slot_back_once(tmp_path: Path) -> None:
    """The executor and orphan recovery ending the same run while another run holds the other slot:
    one of them ends it, and the other run's slot stays counted."""

    async def scenario() -> None:
        wh, quotas = await _repo(tmp_path)
        runs, run_id, other_id = await _two_running_runs(wh, quotas)
        results = await asyncio.gather(
            *(
                end_run(
                    runs,
                    quotas,
                    pipeline_logging_id=run_id,
                    org_slug="acme",
                    status=status,
                    error=None,
                    from_states=("PENDING", "RUNNING"),
                )
                for status in ("COMPLETED", "FAILED", "FAILED")
            )
        )
        assert sorted(results) == [False, False, True]
        usage = await quotas.usage("acme", DAY)
        assert usage is not None and usage.concurrent_runs == 1  # the other run's slot
        assert await quotas.resync_concurrent(quiet_seconds=0) == 0  # and the count is already the truth
        row = await runs.get(other_id, "acme")
        assert row is not None and row["status"] == "RUNNING"
        await wh.close()

    asyncio.run(scenario())


def test_a_process_dying_between_slot_and_final_state_does_not_release_twice(tmp_path: Path) -> None:
    async def scenario() -> None:
        wh, quotas = await _repo(tmp_path)
        runs, run_id, _ = await _two_running_runs(wh, quotas)
        # The first half of end_run, then the process died: the run still reads RUNNING.
        assert await runs.claim_slot_release(pipeline_logging_id=run_id, org_slug="acme", from_states=("RUNNING",))
        await quotas.release("acme")
        # Orphan recovery later ends it: no second release, and a recount agrees.
        ended = await end_run(
            runs,
            quotas,
            pipeline_logging_id=run_id,
            org_slug="acme",
            status="FAILED",
            error="owner lost",
            from_states=("PENDING", "RUNNING"),
        )
        assert ended
        usage = await quotas.usage("acme", DAY)
        assert usage is not None and usage.concurrent_runs == 1
        assert await quotas.resync_concurrent(quiet_seconds=0) == 0
        await wh.close()

    asyncio.run(scenario())


def test_the_periodic_recount_leaves_an_admission_in_flight_alone(tmp_path: Path) -> None:
    """Between its slot reservation and its run row an admission holds a slot no run row shows yet:
    the heartbeat's recount must not free it (only the start-up recount, before any request, may
    count from zero)."""

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
            await setup.onboard({**org, "subscription_plan": "STARTER"})  # one run at a time
            today = datetime.now(UTC).date()
            assert await services.quotas.reserve("acme", today)  # admission in flight: no run row yet
            await services.run_service.recover_orphans()  # the heartbeat's pass
            usage = await services.quotas.usage("acme", today)
            assert usage is not None and usage.concurrent_runs == 1
            assert not await services.quotas.reserve("acme", today)  # the limit still holds
            await services.run_service.recover_orphans(at_start=True)  # a restart: nothing is in flight
            usage = await services.quotas.usage("acme", today)
            assert usage is not None and usage.concurrent_runs == 0
        finally:
            await services.kms.close()
            await services.warehouse.close()

    asyncio.run(scenario())


def test_a_recount_between_claim_and_release_does_not_free_the_slot_twice(tmp_path: Path) -> None:
    """Runs A and B hold the two slots; A is ending (its slot claimed, not yet given back) when a
    recount of the quiet org lands: after A's release, B still holds its slot and one new run fits."""

    async def scenario() -> None:
        wh, quotas = await _repo(tmp_path)
        runs, a, _ = await _two_running_runs(wh, quotas)
        assert await runs.claim_slot_release(pipeline_logging_id=a, org_slug="acme", from_states=("RUNNING",))
        await quotas.resync_concurrent(quiet_seconds=0)
        await quotas.release("acme")
        usage = await quotas.usage("acme", DAY)
        assert usage is not None and usage.concurrent_runs == 1
        assert await quotas.reserve("acme", DAY)
        assert not await quotas.reserve("acme", DAY)  # 2 of 2: B and the new one
        await wh.close()

    asyncio.run(scenario())
