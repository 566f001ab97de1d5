"""``gcp.bq_etl``: run a query in the warehouse and write its rows into an org table.

The destination is created from a schema template (``configs/gcp/bq_etl/schema_template.json``)
with the step's ``table_config`` (partitioning, clustering, labels); columns added to the template
later are added to existing tables. With ``reconcile``, the destination is checked per day (rows,
SUM(cost), SUM(credits)) against the source's totals. A mismatch never becomes visible: where the
backend can check before the commit (DuckDB), a failed check rolls the write back; elsewhere
(BigQuery) the load's own output is checked before anything is written, and the destination again
right after the atomic write. Check results go to ``org_meta_dq_results`` either way.
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
from src.core.engine.loads import append_sql, measures_sql, merge_sql, window_condition
from src.core.engine.schema import Schema, TableOptions, parse_schema, validate_options
from src.core.engine.sql import TableRef, quote_column
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
    """``source_query`` returns (usage_date, row_count, cost, credits) per day of the source; the
    load's output and the destination are measured on the named columns and must agree."""

    source_query: str
    date_column: str
    cost_column: str
    credits_column: str
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
        wh = await s.warehouse_for(context.run.org_slug)  # the org's own account, if it stored one
        dest_cfg = step_config.destination
        schema = schema_templates(s.settings.configs_dir)[dest_cfg.schema_template]
        columns = [f.name for f in schema]
        destination = TableRef(wh.project, context.render_sql(dest_cfg.dataset), context.render_sql(dest_cfg.table))
        options = dest_cfg.table_config.model_copy(
            update={"labels": {k: context.render(v) for k, v in dest_cfg.table_config.labels.items()}}
        )
        await self._ensure_table(context, destination, schema, options)
        query = context.render_sql(step_config.source.query)
        params: dict[str, Any] = context.query_params()
        opts = context.query_options
        reconcile = step_config.reconcile
        mode = dest_cfg.write_mode
        replacing = mode in ("overwrite", "overwrite_partition")
        source_totals: list[Row] = []
        if reconcile is not None:
            source_totals = await wh.query(context.render_sql(reconcile.source_query), params, options=opts)
            if not (replacing and wh.capabilities.checks_before_commit):
                # No check before commit here: the load's own output must match the source before
                # anything is written (a lossy query fails and leaves the table untouched).
                output = await self._measure(context, reconcile, f"({query})")
                await self._record(context, reconcile, source_totals, output, "reconcile_query_output", destination)

        window = dest_cfg.partition_column if mode == "overwrite_partition" else None
        committed = True
        dest_rows: list[Row] = []
        if mode == "append":
            loaded = await wh.execute(append_sql(destination, columns, query), params, options=opts)
        elif mode == "merge":
            loaded = await wh.execute(merge_sql(destination, columns, query, dest_cfg.merge_keys), params, options=opts)
        else:
            where = window_condition(window) if window else "TRUE"
            check_sql = self._measure_sql(reconcile, destination.sql, window) if reconcile else None
            result = await wh.replace_rows(
                destination,
                columns,
                query,
                replace_where=where,
                params=params,
                options=opts,
                check_sql=check_sql,
                check=(
                    (
                        lambda rows: all(
                            c["passed"] for c in _checks(source_totals, rows, context, "", "", reconcile.tolerance)
                        )
                    )
                    if reconcile
                    else None
                ),
            )
            loaded, committed, dest_rows = result.inserted, result.committed, result.check_rows

        checks: list[dict[str, Any]] = []
        if reconcile is not None:
            # The destination must match the source, day by day (checked before the commit where
            # the backend can, else right after the write).
            if not replacing:
                dest_rows = await self._measure(context, reconcile, destination.sql, window)
            checks = await self._record(
                context, reconcile, source_totals, dest_rows, "reconcile_source", destination, committed=committed
            )
        return {
            "status": "COMPLETED",
            "rows_processed": loaded,
            "destination": str(destination),
            "write_mode": mode,
            "reconciled_days": len(checks),
            "source_cost": round(sum(c["source_cost"] for c in checks), 6) if checks else None,
            "source_credits": round(sum(c["source_credits"] for c in checks), 6) if checks else None,
        }

    @staticmethod
    def _measure_sql(reconcile: Reconcile, relation: str, window_column: str | None = None) -> str:
        where = ""
        if window_column:
            where = f"WHERE r.{quote_column(window_column)} BETWEEN @start_date AND @end_date"
        return measures_sql(
            relation,
            date_column=reconcile.date_column,
            cost_column=reconcile.cost_column,
            credits_column=reconcile.credits_column,
            where=where,
        )

    async def _measure(
        self, context: StepContext, reconcile: Reconcile, relation: str, window_column: str | None = None
    ) -> list[Row]:
        sql = self._measure_sql(reconcile, relation, window_column)
        wh = await context.services.warehouse_for(context.run.org_slug)  # reads the export too
        return await wh.query(sql, context.query_params(), options=context.query_options)

    @staticmethod
    async def _record(
        context: StepContext,
        reconcile: Reconcile,
        source_totals: list[Row],
        measured: list[Row],
        check_name: str,
        destination: TableRef,
        *,
        committed: bool = True,
    ) -> list[dict[str, Any]]:
        """Compare per-day measures with the source's totals, record DQ rows, fail on any difference."""
        checks = _checks(source_totals, measured, context, str(destination), check_name, reconcile.tolerance)
        await context.services.runs.insert_dq_results(checks)
        failed = [c for c in checks if not c["passed"]]
        if failed:
            if check_name == "reconcile_query_output":
                stage = "before writing (nothing was written)"
            elif not committed:
                stage = "before commit (the write was rolled back)"
            else:
                stage = "after writing"
            raise StepFailedError(
                f"reconciliation failed {stage} for {len(failed)} day(s): "
                + "; ".join(f"{c['usage_date']}: {c['message']}" for c in failed[:5]),
                code="reconciliation_failed",
                retryable=False,
            )
        return checks

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


def _close(a: float, b: float, tolerance: float) -> bool:
    """Equal within ``tolerance`` (absolute, default a millionth of a currency unit), widened for
    very large sums by FLOAT64's own summation error (about 1e-9 of the total): the same rows
    summed in another order must not fail a load."""
    return abs(a - b) <= max(tolerance, 1e-9 * max(abs(a), abs(b)))


def _checks(
    source: list[Row], measured: list[Row], context: StepContext, target: str, check_name: str, tolerance: float
) -> list[dict[str, Any]]:
    """DQ rows: one per day of the window (a day without data on either side passes as 0 = 0)."""
    by_day_src = {r["usage_date"]: r for r in source}
    by_day_dst = {r["usage_date"]: r for r in measured}
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
        if not _close(s_cost, d_cost, tolerance):
            problems.append(f"cost {d_cost:.6f} != source {s_cost:.6f}")
        if not _close(s_cred, d_cred, tolerance):
            problems.append(f"credits {d_cred:.6f} != source {s_cred:.6f}")
        checks.append(
            {
                "dq_result_id": f"dq_{secrets.token_hex(8)}",
                "pipeline_logging_id": context.run.pipeline_logging_id,
                "org_slug": context.run.org_slug or "",
                "step_id": context.step.step_id,
                "check_name": check_name,
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
