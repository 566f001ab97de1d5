"""The BigQuery code paths the emulator cannot prove, checked offline: job configuration
(maximum_bytes_billed, labels, timeout), error translation, generated SQL and DDL."""

from __future__ import annotations

import asyncio

import pytest
import requests
import sqlglot
from google.api_core import exceptions as gexc

from src.core.engine.base import QueryOptions, TypedParam
from src.core.engine.bigquery_backend import BigQueryWarehouse
from src.core.engine.bigquery_mapping import ddl_type, to_query_parameter, translate_error
from src.core.engine.loads import replace_merge_sql, window_condition
from src.core.engine.schema import parse_schema
from src.core.engine.sql import TableRef
from src.core.errors import (
    TerminalWarehouseError,
    TransientWarehouseError,
    WarehouseAccessDeniedError,
    WarehouseNotFoundError,
)


def warehouse() -> BigQueryWarehouse:
    # No client is built (start() is not called): job configs are pure objects.
    return BigQueryWarehouse(
        project="acme-prod-1", location="EU", api_endpoint=None, maximum_bytes_billed=123_456, timeout_seconds=42
    )


def test_tenant_queries_carry_maximum_bytes_billed_labels_and_a_timeout() -> None:
    """bqemulator ignores maximum_bytes_billed (peers.md §1), so the job config is asserted here."""
    config = warehouse()._job_config(
        "SELECT @x AS x", {"x": 1, "unused": 2}, QueryOptions(org_slug="acme_corp", run_id="6F2A-uuid")
    )
    assert config.maximum_bytes_billed == 123_456
    assert config.labels == {"managed-by": "convergence", "org": "acme_corp", "run_id": "6f2a-uuid"}
    assert int(config.job_timeout_ms) == 42_000
    assert [p.name for p in config.query_parameters] == ["x"]  # only the parameters the SQL names


def test_service_queries_are_not_capped_per_tenant() -> None:
    config = warehouse()._job_config("SELECT 1", None, None)
    assert config.maximum_bytes_billed is None
    assert config.labels == {"managed-by": "convergence"}


def test_missing_parameters_are_refused_before_sending() -> None:
    with pytest.raises(TerminalWarehouseError, match="missing query parameters: y"):
        warehouse()._job_config("SELECT @y", {}, None)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (gexc.TooManyRequests("slow down"), TransientWarehouseError),
        (gexc.InternalServerError("boom"), TransientWarehouseError),
        (gexc.ServiceUnavailable("later"), TransientWarehouseError),
        (gexc.BadRequest("Transaction is aborted due to concurrent update against table x"), TransientWarehouseError),
        (gexc.BadRequest("Could not serialize access to table x due to concurrent update"), TransientWarehouseError),
        (gexc.Forbidden("Exceeded rate limits", errors=[{"reason": "rateLimitExceeded"}]), TransientWarehouseError),
        (gexc.Forbidden("Access Denied", errors=[{"reason": "accessDenied"}]), WarehouseAccessDeniedError),
        (gexc.NotFound("Not found: Table p:d.t"), WarehouseNotFoundError),
        (gexc.BadRequest("Syntax error: Unexpected identifier"), TerminalWarehouseError),
        (TimeoutError("job did not finish"), TransientWarehouseError),
        (gexc.RetryError("Timeout of 5.0s exceeded", cause=None), TransientWarehouseError),
        (requests.exceptions.ConnectionError("connection refused"), TransientWarehouseError),
        (requests.exceptions.ReadTimeout("read timed out"), TransientWarehouseError),
    ],
)
def test_google_errors_become_transient_or_terminal(exc: Exception, expected: type) -> None:
    translated = translate_error(exc)
    assert type(translated) is expected
    assert "Traceback" not in translated.message


def test_typed_parameters() -> None:
    assert to_query_parameter("d", TypedParam("DATE", None)).type_ == "DATE"
    array = to_query_parameter("s", TypedParam("ARRAY<STRING>", ["a"]))
    assert array.array_type == "STRING" and array.values == ["a"]
    assert to_query_parameter("n", 3).type_ == "INT64"
    assert to_query_parameter("b", True).type_ == "BOOL"


def test_window_replace_is_one_bigquery_merge() -> None:
    sql = replace_merge_sql(
        TableRef("acme-prod-1", "acme_prod", "billing_cost_daily"),
        ["usage_date", "cost"],
        "SELECT DATE(b.usage_start_time) AS usage_date, b.cost FROM `p-1x.d.t` AS b",
        window_condition("usage_date"),
    )
    (tree,) = sqlglot.parse(sql, read="bigquery")
    assert tree is not None and tree.key == "merge"
    assert "ON FALSE" in sql
    assert "WHEN NOT MATCHED BY SOURCE AND t.`usage_date` BETWEEN @start_date AND @end_date" in sql


def test_ddl_types_for_added_columns() -> None:
    """ALTER TABLE ADD COLUMN on bqemulator does not show in its catalog (peers.md §1): checked here."""
    schema = parse_schema(
        [
            {"name": "a", "type": "INTEGER"},
            {"name": "b", "type": "RECORD", "mode": "REPEATED", "fields": [{"name": "x", "type": "FLOAT"}]},
        ],
        source="t",
    )
    assert [ddl_type(f) for f in schema] == ["INT64", "ARRAY<STRUCT<`x` FLOAT64>>"]
    sqlglot.parse_one(f"ALTER TABLE `p-1x.d.t` ADD COLUMN IF NOT EXISTS b {ddl_type(schema[1])}", read="bigquery")


class _FakeJob:
    """What ``BigQueryWarehouse._job`` needs of a job: the real client's QueryJob, built from the
    API resource BigQuery answers (statistics as it reports them: strings of digits)."""

    def __init__(self, statistics: dict[str, object]) -> None:
        from google.cloud.bigquery import QueryJob

        resource = {
            "jobReference": {"projectId": "acme-prod-1", "jobId": "job_1", "location": "EU"},
            "configuration": {"query": {"query": "SELECT 1"}},
            "status": {"state": "DONE"},
            "statistics": {"query": statistics},
        }
        self.job = QueryJob.from_api_repr(resource, client=_FakeClient(None))  # type: ignore[arg-type]

    def result(self, **_: object) -> list[object]:
        return []

    def __getattr__(self, name: str) -> object:
        return getattr(self.job, name)


class _FakeClient:
    def __init__(self, job: _FakeJob | None) -> None:
        self._job = job
        self.project = "acme-prod-1"

    def query(self, *_: object, **__: object) -> _FakeJob | None:
        return self._job


def test_job_statistics_add_up_on_the_step_and_stay_null_where_unreported() -> None:
    """The emulator reports no bytes billed or slot time: the path from a job's statistics to a
    step's figures is proven on the client's own QueryJob objects."""
    from src.core.engine.bigquery_mapping import job_statistics
    from src.core.run_types import JobStats

    billed = _FakeJob({"totalBytesProcessed": "2500000", "totalBytesBilled": "10485760", "totalSlotMs": "1234"})
    assert job_statistics(billed) == {"bytes_processed": 2_500_000, "bytes_billed": 10_485_760, "slot_ms": 1234}
    unreported = _FakeJob({"totalBytesProcessed": "0"})
    assert job_statistics(unreported) == {"bytes_processed": 0, "bytes_billed": None, "slot_ms": None}

    wh = warehouse()
    stats = JobStats()
    options = QueryOptions(org_slug="acme", stats=stats)
    config = wh._job_config("SELECT 1", None, options)
    for job in (billed, billed, unreported):
        wh._client = _FakeClient(job)  # type: ignore[assignment]
        asyncio.run(wh._job("SELECT 1", config, options))
    assert (stats.jobs, stats.bytes_processed, stats.bytes_billed, stats.slot_ms) == (3, 5_000_000, 20_971_520, 2468)
    assert JobStats().bytes_billed is None  # no job: null, never zero


def test_staging_tables_are_created_to_expire() -> None:
    """bqemulator accepts but does not keep a table's expiration: the DDL the backend sends is checked."""
    from datetime import UTC, datetime

    sent: list[str] = []

    class Client(_FakeClient):
        def query(self, sql: str, **_: object) -> _FakeJob:
            sent.append(sql)
            return _FakeJob({"totalBytesProcessed": "7"})

        def get_table(self, *_: object, **__: object) -> object:
            return type("T", (), {"num_rows": 3})()

    wh = warehouse()
    wh._client = Client(None)  # type: ignore[assignment]
    ref = TableRef("acme-prod-1", "acme_prod", "_snapshot_x_load")
    import asyncio

    rows = asyncio.run(wh.create_table_as(ref, "SELECT 1 AS x;", expires_at=datetime(2026, 12, 2, 6, 30, tzinfo=UTC)))
    assert rows == 3
    (ddl,) = sent
    assert ddl.startswith("CREATE OR REPLACE TABLE `acme-prod-1.acme_prod._snapshot_x_load` ")
    assert "OPTIONS(expiration_timestamp=TIMESTAMP '2026-12-02 06:30:00+00') AS SELECT 1 AS x" in ddl
    sqlglot.parse_one(ddl, read="bigquery")
