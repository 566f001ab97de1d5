"""BigQuery SQL in configs/ parses as BigQuery and its DuckDB translation runs; the rewrite pass
keeps BigQuery's semantics."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlglot

from src.core.engine.duckdb_backend import DuckDBWarehouse
from src.core.engine.loads import (
    replace_merge_sql,
    replace_statements,
    window_condition,
)
from src.core.engine.repositories.billing_export import add_ingestion_day, export_schema
from src.core.engine.schema import parse_schema
from src.core.engine.sql import TableRef
from src.core.engine.translate import to_duckdb
from src.core.pipeline.loader import PipelineStore
from src.core.pipeline.registry import ProcessorRegistry
from src.core.placeholders import PLACEHOLDER_RE
from src.core.processors.focus.build import Config as FocusConfig
from src.core.processors.focus.build import focus_schema, mapping_sql, replaced_condition
from src.core.processors.gcp.bq_etl import Config as EtlConfig
from src.core.processors.gcp.bq_etl import schema_templates
from tests.server import REPO

CONFIGS = REPO / "configs"
VALUES = {
    "billing_export_table": "convergence-local.billing_export.gcp_billing_export_v1_X",
    "project_id": "convergence-local",
    "org_dataset": "acme_local",
    "destination_table": "billing_cost_daily",
}


def config_sql() -> list[tuple[str, str]]:
    store = PipelineStore(CONFIGS, ProcessorRegistry())
    store.load_all()
    found = []
    for p in store.all():
        for step_id, cfg in p.step_configs.items():
            if isinstance(cfg, EtlConfig):
                snapshot = f"({cfg.snapshot.query})" if cfg.snapshot else ""
                if cfg.snapshot:
                    found.append((f"{p.path}:{step_id}:snapshot", cfg.snapshot.query))
                found.append((f"{p.path}:{step_id}:source", cfg.source.query.replace("{snapshot}", snapshot)))
                if cfg.reconcile:
                    rec = cfg.reconcile
                    found.append(
                        (f"{p.path}:{step_id}:reconcile.source", rec.source_query.replace("{snapshot}", snapshot))
                    )
                    dest = TableRef("convergence-local", "acme_local", "billing_cost_daily")
                    source = cfg.source.query.replace("{snapshot}", snapshot)
                    for where, relation in (("output", f"({source})"), ("destination", dest.sql)):
                        found.append((f"{p.path}:{step_id}:reconcile.{where}", rec.measure_sql(relation)))
                    columns = [f.name for f in schema_templates(CONFIGS)[cfg.destination.schema_template]]
                    found.append(
                        (
                            f"{p.path}:{step_id}:write.merge",
                            replace_merge_sql(dest, columns, source, window_condition("usage_date")),
                        )
                    )
                    for i, statement in enumerate(
                        replace_statements(dest, columns, source, window_condition("usage_date"))
                    ):
                        found.append((f"{p.path}:{step_id}:write.replace{i}", statement))
            if isinstance(cfg, FocusConfig):
                found += focus_sql(f"{p.path}:{step_id}", cfg, str(p.spec.variables["destination_table"]))
    return found


def focus_sql(where: str, cfg: FocusConfig, provider_table: str) -> list[tuple[str, str]]:
    """The statements of a ``focus.build`` step, as the processor composes them."""
    source = f"convergence-local.acme_local.{cfg.source_table.replace('{destination_table}', provider_table)}"
    mapping = mapping_sql(CONFIGS, cfg.mapping).replace("{source_table}", source)
    focus = TableRef("convergence-local", "acme_local", "focus_cost")
    replace = replaced_condition(cfg.replace)
    mine = f"(SELECT * FROM {focus.sql} WHERE {replace.replace('{t}.', '')})"
    columns = [f.name for f in focus_schema(CONFIGS)]
    found = [
        (f"{where}:mapping", mapping),
        (f"{where}:reconcile.source", cfg.reconcile.source_query.replace("{source_table}", source)),
        (f"{where}:reconcile.output", cfg.reconcile.measure_sql(f"({mapping})")),
        (f"{where}:reconcile.destination", cfg.reconcile.measure_sql(mine)),
        (f"{where}:write.merge", replace_merge_sql(focus, columns, mapping, replace)),
    ]
    found += [
        (f"{where}:write.replace{i}", sql) for i, sql in enumerate(replace_statements(focus, columns, mapping, replace))
    ]
    return found


def render(sql: str) -> str:
    return PLACEHOLDER_RE.sub(lambda m: VALUES[m.group(1)], sql)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Any:
    async def build() -> DuckDBWarehouse:
        wh = DuckDBWarehouse(path=Path(tmp_path_factory.mktemp("sql")) / "w.duckdb", project="convergence-local")
        await wh.start()
        await wh.create_dataset("billing_export")
        export = wh.table("billing_export", "gcp_billing_export_v1_X")
        await wh.create_table(export, export_schema(CONFIGS))
        await add_ingestion_day(wh, export)
        await wh.create_dataset("acme_local")
        await wh.create_table(wh.table("acme_local", "billing_cost_daily"), schema_templates(CONFIGS)["billing_cost"])
        await wh.create_table(wh.table("acme_local", "focus_cost"), focus_schema(CONFIGS))
        aws = json.loads((CONFIGS / "aws/s3_data_loader/schema_template.json").read_text())["aws_billing_cost"]
        await wh.create_table(wh.table("acme_local", "aws_billing_cost_daily"), parse_schema(aws, source="aws"))
        return wh

    return asyncio.run(build())


@pytest.mark.parametrize(("where", "sql"), config_sql(), ids=lambda v: v if ":" in str(v) else "")
def test_config_sql_is_bigquery_and_runs_on_duckdb(warehouse: DuckDBWarehouse, where: str, sql: str) -> None:
    text = render(sql)
    sqlglot.parse_one(text, read="bigquery")  # raises on anything that is not BigQuery SQL
    params = {
        "start_date": date(2026, 1, 1),
        "end_date": date(2026, 1, 2),
        "org_slug": "acme",
        "pipeline_logging_id": "x",
        "tolerance": 1e-6,
        "focus_provider": "aws" if where.startswith("aws/") else "gcp",
    }
    if where.split(":")[-1].startswith("write.merge"):
        return  # DuckDB runs the DELETE + INSERT form; the MERGE form is BigQuery's (parsed above)
    if where.split(":")[-1].startswith("write.replace"):
        asyncio.run(warehouse.execute(text, params))
    else:
        asyncio.run(warehouse.check_query(text, params))


def test_unnest_sum_is_rewritten_to_a_list_function() -> None:
    (statement,) = to_duckdb("SELECT IFNULL((SELECT SUM(c.amount) FROM UNNEST(b.credits) AS c), 0) AS x FROM t AS b")
    assert "LIST_SUM(LIST_TRANSFORM(b.credits, c -> c.amount))" in statement.sql
    assert "UNNEST" not in statement.sql


def test_rewrite_keeps_bigquery_semantics() -> None:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT * FROM "
        "(VALUES (1, [{'amount': -1.5}, {'amount': -0.25}]), (2, []), (3, NULL)) v(id, credits)"
    )
    rewritten = to_duckdb(
        "SELECT b.id, (SELECT SUM(c.amount) FROM UNNEST(b.credits) AS c) AS s FROM t AS b ORDER BY b.id"
    )
    plain = sqlglot.transpile(
        "SELECT b.id, (SELECT SUM(c.amount) FROM UNNEST(b.credits) AS c) AS s FROM t AS b ORDER BY b.id",
        read="bigquery",
        write="duckdb",
    )[0]
    assert (
        con.execute(rewritten[0].sql).fetchall() == con.execute(plain).fetchall() == [(1, -1.75), (2, None), (3, None)]
    )


def test_bare_numeric_keeps_bigquery_precision() -> None:
    (statement,) = to_duckdb("SELECT CAST(x AS NUMERIC) FROM t")
    assert "DECIMAL(38, 9)" in statement.sql
    con = duckdb.connect()
    (value,) = con.execute(to_duckdb("SELECT CAST(1.123456789 AS NUMERIC) AS v")[0].sql).fetchone() or (None,)
    assert str(value) == "1.123456789"


def test_parameters_are_detected_per_statement() -> None:
    first, second = to_duckdb("SELECT @a, @b; DELETE FROM t WHERE x = @c")
    assert first.parameters == {"a", "b"}
    assert second.parameters == {"c"}
