"""The BigQuery code paths the emulator cannot prove, checked offline: job configuration
(maximum_bytes_billed, labels, timeout), error translation, generated SQL and DDL."""

from __future__ import annotations

import pytest
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
        TableRef("acme-prod-1", "acme_prod", "gcp_billing_cost_daily"),
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
