"""``gcp.bq_etl``: run a query in the warehouse and write its rows into an org table.

The destination is created from a schema template (``configs/gcp/bq_etl/schema_template.json``)
with the step's ``table_config`` (partitioning, clustering, labels); columns added to the template
later are added to existing tables. The write (see ``engine.loads``) and the reconciliation run in
one transaction: if the destination does not match the source per day (rows, SUM(cost),
SUM(credits)), the load is rolled back and the step fails with the days that differ. Check results
go to ``org_meta_dq_results`` either way.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from src.core.engine.base import Row
from src.core.engine.loads import load_statements
from src.core.engine.schema import Schema, TableOptions, parse_schema, validate_options
from src.core.engine.sql import TableRef
from src.core.errors import ConfigError, StepFailedError
from src.core.pipeline.context import StepContext

TEMPLATES_FILE = Path("gcp/bq_etl/schema_template.json")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    query: str = Field(min_length=1)


class Destination(_Strict):
    dataset: str
    table: str
    schema_template: str
    write_mode: Literal["append", "overwrite", "overwrite_partition", "merge"]
    partition_column: str | None = None
    merge_keys: tuple[str, ...] = ()
    table_config: TableOptions = TableOptions()

    @model_validator(mode="after")
    def _mode_needs(self) -> Destination:
        if self.write_mode == "overwrite_partition" and not self.partition_column:
            raise ValueError("write_mode overwrite_partition needs partition_column")
        if self.write_mode == "merge" and not self.merge_keys:
            raise ValueError("write_mode merge needs merge_keys")
        return self


class Reconcile(_Strict):
    """Two queries returning (usage_date, row_count, cost, credits) per day."""

    source_query: str
    destination_query: str
    tolerance: float = Field(1e-6, ge=0, le=0.005)


class Config(_Strict):
    source: Source
    destination: Destination
    reconcile: Reconcile | None = None


@lru_cache(maxsize=4)
def schema_templates(configs_dir: Path) -> dict[str, Schema]:
    path = configs_dir / TEMPLATES_FILE
    raw = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ConfigError(str(TEMPLATES_FILE), "", "expected an object of template name -> schema")
    return {name: parse_schema(fields, source=f"{TEMPLATES_FILE}: {name}") for name, fields in raw.items()}


def check_config(config: Config, configs_dir: Path, file: str, where: str) -> None:
    """Load-time checks that need ``configs/`` (called by the pipeline loader)."""
    templates = schema_templates(configs_dir)
    dest = config.destination
    schema = templates.get(dest.schema_template)
    if schema is None:
        raise ConfigError(file, f"{where}.destination.schema_template", f"no template {dest.schema_template!r}")
    validate_options(dest.table_config, schema, source=f"{file}: {where}.destination.table_config")
    names = {f.name for f in schema}
    for column in (dest.partition_column, *dest.merge_keys):
        if column and column not in names:
            raise ConfigError(
                file, f"{where}.destination", f"column {column!r} is not in template {dest.schema_template!r}"
            )


class BqEtlProcessor:
    async def execute(self, step_config: Config, context: StepContext) -> dict[str, Any]:
        s = context.services
        wh = s.warehouse
        dest_cfg = step_config.destination
        schema = schema_templates(s.settings.configs_dir)[dest_cfg.schema_template]
        destination = TableRef(wh.project, context.render_sql(dest_cfg.dataset), context.render_sql(dest_cfg.table))
        options = dest_cfg.table_config.model_copy(
            update={"labels": {k: context.render(v) for k, v in dest_cfg.table_config.labels.items()}}
        )
        await self._ensure_table(context, destination, schema, options)
        before, write = load_statements(
            write_mode=dest_cfg.write_mode,
            destination=destination,
            columns=[f.name for f in schema],
            source_query=context.render_sql(step_config.source.query),
            partition_column=dest_cfg.partition_column,
            merge_keys=dest_cfg.merge_keys,
        )
        params = context.query_params()
        reconcile = step_config.reconcile
        checks: list[dict[str, Any]] = []
        async with wh.transaction(context.query_options) as tx:
            deleted = 0
            for statement in before:
                deleted += await tx.execute(statement, params)
            loaded = await tx.execute(write, params)
            if reconcile is not None:
                source_rows = await tx.query(context.render_sql(reconcile.source_query), params)
                dest_rows = await tx.query(context.render_sql(reconcile.destination_query), params)
                checks = _compare(source_rows, dest_rows, context, str(destination), reconcile.tolerance)
                failed = [c for c in checks if not c["passed"]]
                if failed:
                    await s.runs.insert_dq_results(checks)
                    raise StepFailedError(
                        f"reconciliation failed for {len(failed)} day(s), load rolled back: "
                        + "; ".join(f"{c['usage_date']}: {c['message']}" for c in failed[:5]),
                        code="reconciliation_failed",
                        retryable=False,
                    )
        if checks:
            await s.runs.insert_dq_results(checks)
        return {
            "status": "COMPLETED",
            "rows_processed": loaded,
            "rows_replaced": deleted,
            "destination": str(destination),
            "write_mode": dest_cfg.write_mode,
            "reconciled_days": len(checks),
            "source_cost": round(sum(c["source_cost"] for c in checks), 6) if checks else None,
            "source_credits": round(sum(c["source_credits"] for c in checks), 6) if checks else None,
        }

    @staticmethod
    async def _ensure_table(context: StepContext, ref: TableRef, schema: Schema, options: TableOptions) -> None:
        wh = context.services.warehouse
        await wh.create_dataset(ref.dataset, labels={"org": context.run.org_slug or "", "managed-by": "convergence"})
        if await wh.create_table(ref, schema, options):
            return
        present = {c.lower() for c in await wh.table_columns(ref)}
        missing = [f for f in schema if f.name.lower() not in present and f.mode != "REQUIRED"]
        if missing:
            await wh.add_columns(ref, missing)


def _window_days(context: StepContext) -> list[date]:
    start, end = context.variables.get("start_date"), context.variables.get("end_date")
    if not isinstance(start, date) or not isinstance(end, date):
        return []
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def _compare(
    source: list[Row], dest: list[Row], context: StepContext, target: str, tolerance: float
) -> list[dict[str, Any]]:
    by_day_src = {r["usage_date"]: r for r in source}
    by_day_dst = {r["usage_date"]: r for r in dest}
    days = sorted(set(_window_days(context)) | set(by_day_src) | set(by_day_dst))
    now = datetime.now(UTC)
    checks = []
    for day in days:
        src, dst = by_day_src.get(day, {}), by_day_dst.get(day, {})
        s_rows, d_rows = int(src.get("row_count") or 0), int(dst.get("row_count") or 0)
        s_cost, d_cost = float(src.get("cost") or 0), float(dst.get("cost") or 0)
        s_cred, d_cred = float(src.get("credits") or 0), float(dst.get("credits") or 0)
        problems = []
        if s_rows != d_rows:
            problems.append(f"rows {d_rows} != source {s_rows}")
        if abs(s_cost - d_cost) > tolerance:
            problems.append(f"cost {d_cost:.6f} != source {s_cost:.6f}")
        if abs(s_cred - d_cred) > tolerance:
            problems.append(f"credits {d_cred:.6f} != source {s_cred:.6f}")
        checks.append(
            {
                "dq_result_id": f"dq_{secrets.token_hex(8)}",
                "pipeline_logging_id": context.run.pipeline_logging_id,
                "org_slug": context.run.org_slug or "",
                "step_id": context.step.step_id,
                "check_name": "reconcile_source",
                "target_table": target,
                "usage_date": day,
                "source_rows": s_rows,
                "dest_rows": d_rows,
                "source_cost": round(s_cost, 6),
                "dest_cost": round(d_cost, 6),
                "source_credits": round(s_cred, 6),
                "dest_credits": round(d_cred, 6),
                "passed": not problems,
                "message": "; ".join(problems) if problems else "rows, cost and credits match the source",
                "checked_at": now,
            }
        )
    return checks


def get_engine() -> BqEtlProcessor:
    return BqEtlProcessor()
