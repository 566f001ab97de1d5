"""DuckDB's side of "one read of the source, one snapshot": the source totals and the write of a
``replace_rows`` run in one transaction, so rows another connection appends in between are seen by
neither; tables made by ``create_table_as`` carry their expiry and are dropped after it; the demo
export carries its ingestion day in ``_PARTITIONTIME``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from src.core.demo.billing_export import export_table_name, is_correction_day
from src.core.demo.seed import seed_demo_billing
from src.core.engine import duckdb_backend
from src.core.engine.base import TypedParam
from src.core.engine.duckdb_backend import DuckDBWarehouse

REPO = Path(__file__).resolve().parents[2]
PROJECT = "convergence-local"
DAY = date(2026, 11, 20)


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[DuckDBWarehouse]:
    wh = DuckDBWarehouse(path=tmp_path / "w.duckdb", project=PROJECT)

    async def seed() -> None:
        await wh.start()
        await seed_demo_billing(wh, REPO / "configs", end_date=DAY, days=4, rows_per_day=40)
        await wh.create_dataset("acme_local")
        await wh.execute(
            f"CREATE TABLE `{PROJECT}.acme_local.dest` (usage_date DATE, cost FLOAT64, billing_account_id STRING)"
        )

    asyncio.run(seed())
    yield wh
    asyncio.run(wh.close())


def test_rows_appended_during_the_write_are_in_neither_the_totals_nor_the_write(
    warehouse: DuckDBWarehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    export = f"`{PROJECT}.billing_export.{export_table_name()}`"
    snapshot = f"(SELECT b.* FROM {export} AS b WHERE DATE(b.usage_start_time) BETWEEN @start_date AND @end_date)"
    source_sql = f"SELECT COUNT(*) AS n, SUM(b.cost) AS cost FROM {snapshot} AS b"
    query = f"SELECT DATE(b.usage_start_time) AS usage_date, b.cost, b.billing_account_id FROM {snapshot} AS b"
    params: dict[str, Any] = {"start_date": TypedParam("DATE", DAY), "end_date": TypedParam("DATE", DAY)}
    append = (
        f"INSERT INTO {export} (billing_account_id, usage_start_time, usage_end_time, cost, currency, export_time) "
        f"VALUES ('late', TIMESTAMP '{DAY} 12:00:00', TIMESTAMP '{DAY} 13:00:00', 1.5, 'USD', CURRENT_TIMESTAMP())"
    )
    real_run = duckdb_backend._run
    appended: list[bool] = []

    def run_then_append(cursor: Any, sql: str, run_params: Any) -> Any:
        result = real_run(cursor, sql, run_params)
        if sql == source_sql and not appended:  # another connection commits rows mid-transaction
            other = warehouse._db.cursor()  # type: ignore[union-attr]
            real_run(other, append, None)
            other.close()
            appended.append(True)
        return result

    monkeypatch.setattr(duckdb_backend, "_run", run_then_append)
    seen: dict[str, Any] = {}

    def check(source: list[dict[str, Any]], dest: list[dict[str, Any]]) -> bool:
        seen.update(source=source[0], dest=dest[0])
        return bool(source[0]["n"] == dest[0]["n"])

    result = asyncio.run(
        warehouse.replace_rows(
            warehouse.table("acme_local", "dest"),
            ["usage_date", "cost", "billing_account_id"],
            query,
            replace_where="{t}.usage_date BETWEEN @start_date AND @end_date",
            params=params,
            source_sql=source_sql,
            check_sql=f"SELECT COUNT(*) AS n FROM `{PROJECT}.acme_local.dest`",
            check=check,
        )
    )
    monkeypatch.setattr(duckdb_backend, "_run", real_run)
    assert appended and result.committed
    assert seen["source"]["n"] == seen["dest"]["n"] == result.inserted
    late = asyncio.run(warehouse.query(f"SELECT COUNT(*) AS n FROM {export} WHERE billing_account_id = 'late'"))
    assert late[0]["n"] == 1  # the row is in the export ...
    loaded = asyncio.run(
        warehouse.query(f"SELECT COUNT(*) AS n FROM `{PROJECT}.acme_local.dest` WHERE billing_account_id = 'late'")
    )
    assert loaded[0]["n"] == 0  # ... but not in this write; the next one has it:
    again = asyncio.run(
        warehouse.replace_rows(
            warehouse.table("acme_local", "dest"),
            ["usage_date", "cost", "billing_account_id"],
            query,
            replace_where="{t}.usage_date BETWEEN @start_date AND @end_date",
            params=params,
            source_sql=source_sql,
        )
    )
    assert again.inserted == result.inserted + 1 == again.source_rows[0]["n"]


def test_tables_made_to_expire_are_dropped_after_their_time(warehouse: DuckDBWarehouse) -> None:
    async def scenario() -> tuple[int, int, list[str], list[str]]:
        soon = warehouse.table("acme_local", "_snapshot_a")
        later = warehouse.table("acme_local", "_snapshot_b")
        now = datetime.now(UTC)
        rows = await warehouse.create_table_as(soon, "SELECT 1 AS x UNION ALL SELECT 2", expires_at=now)
        await warehouse.create_table_as(later, "SELECT 1 AS x", expires_at=now + timedelta(hours=1))
        before = await warehouse.list_tables("acme_local")
        dropped = await warehouse.drop_expired_tables()
        return rows, dropped, before, await warehouse.list_tables("acme_local")

    rows, dropped, before, after = asyncio.run(scenario())
    assert rows == 2
    assert {"_snapshot_a", "_snapshot_b"} <= set(before)
    assert dropped == 1
    assert "_snapshot_a" not in after and "_snapshot_b" in after


def test_the_demo_export_carries_its_ingestion_day(warehouse: DuckDBWarehouse) -> None:
    rows = asyncio.run(
        warehouse.query(
            f"SELECT DATE(usage_start_time) AS usage_day, DATE(_PARTITIONTIME) AS ingested, "
            f"DATE(export_time) AS exported FROM `{PROJECT}.billing_export.{export_table_name()}`"
        )
    )
    assert rows
    assert all(r["ingested"] == r["exported"] for r in rows)
    assert all(r["ingested"] >= r["usage_day"] for r in rows)  # exported on or after the usage day
    for day in {r["usage_day"] for r in rows}:
        ingested = {r["ingested"] for r in rows if r["usage_day"] == day}
        if is_correction_day(day, 42):  # late rows and corrections land in later partitions
            assert len(ingested) == 2 and max(ingested) > min(ingested)
        else:
            assert len(ingested) == 1
