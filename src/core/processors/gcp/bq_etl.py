"""``gcp.bq_etl``: run a query in the warehouse and write its rows into an org table.

The destination is created from a schema template (``configs/gcp/bq_etl/schema_template.json``)
with the step's ``table_config`` (partitioning, clustering, labels); columns added to the template
later are added to existing tables, and a table listed in ``renamed_from`` is moved to the new name
first (its rows kept). With ``snapshot``, the source is read once, at the start of the step, and
every later read of the step (``{snapshot}`` in the queries) uses that one snapshot: where the
warehouse reads and writes in one transaction over one snapshot (DuckDB), the snapshot is that
transaction (a copy would double the cost of a load); elsewhere (BigQuery) it is a staging table in
the destination's dataset, named by run and step, that expires by itself and is dropped when the
step ends. With ``reconcile``, the destination is checked per day (and currency) — rows, SUM(cost),
SUM(credits) — against the source's totals. A mismatch never becomes visible: where the backend can
check before the commit (DuckDB), a failed check rolls the write back; elsewhere (BigQuery) the
load's own output is checked before anything is written, and the destination again right after the
atomic write. Check results go to ``org_meta_dq_results`` either way.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from src.core.engine.base import Row, Warehouse
from src.core.engine.loads import append_sql, merge_sql, window_condition
from src.core.engine.schema import Schema
from src.core.engine.sql import TableRef
from src.core.errors import WarehouseError
from src.core.pipeline.context import StepContext
from src.core.processors import reconcile as rec
from src.core.processors.destination import (
    Destination,
    check_destination,
    destination_ref,
    ensure_table,
    load_templates,
)
from src.core.processors.reconcile import Reconcile

TEMPLATES_FILE = Path("gcp/bq_etl/schema_template.json")
TEMPLATE_VARIABLES = frozenset({"snapshot"})
_SNAPSHOT = re.compile(r"\{snapshot\}")
log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    query: str = Field(min_length=1)


class Snapshot(_Strict):
    """The source's rows as the step starts (``{snapshot}`` in ``source.query`` and
    ``reconcile.source_query``): read once, whatever lands in the source meanwhile."""

    query: str = Field(min_length=1)
    expiration_hours: float = Field(24, gt=0, le=168, description="Lifetime of a staging copy (BigQuery).")


class Config(_Strict):
    snapshot: Snapshot | None = None
    source: Source
    destination: Destination
    reconcile: Reconcile | None = None

    @model_validator(mode="after")
    def _snapshot_used(self) -> Config:
        texts = [self.source.query, self.reconcile.source_query if self.reconcile else ""]
        uses = any(_SNAPSHOT.search(text) for text in texts)
        if uses and self.snapshot is None:
            raise ValueError("{snapshot} is used but the step has no snapshot")
        if self.snapshot is not None and not uses:
            raise ValueError("snapshot is set but no query reads {snapshot}")
        if self.snapshot is not None and _SNAPSHOT.search(self.snapshot.query):
            raise ValueError("the snapshot query cannot read {snapshot}")
        return self


def schema_templates(configs_dir: Path) -> dict[str, Schema]:
    return load_templates(configs_dir, TEMPLATES_FILE)


def check_config(config: Config, configs_dir: Path, file: str, where: str) -> None:
    """Load-time checks that need ``configs/`` (called by the pipeline loader)."""
    check_destination(config.destination, TEMPLATES_FILE, configs_dir, file, where)


class BqEtlProcessor:
    async def execute(self, step_config: Config, context: StepContext) -> dict[str, Any]:
        s = context.services
        wh = await s.warehouse_for(context.run.org_slug)  # the org's own account, if it stored one
        dest_cfg = step_config.destination
        schema = schema_templates(s.settings.configs_dir)[dest_cfg.schema_template]
        destination = destination_ref(context, wh, dest_cfg)
        await ensure_table(context, destination, schema, dest_cfg)
        staging: TableRef | None = None
        relation = ""
        if step_config.snapshot is not None:
            staging, relation = await _take_snapshot(context, wh, step_config.snapshot, destination.dataset)
        try:
            return await self._load(context, wh, step_config, destination, [f.name for f in schema], relation)
        finally:
            if staging is not None:
                await _drop_staging(wh, staging)

    async def _load(
        self,
        context: StepContext,
        wh: Warehouse,
        step_config: Config,
        destination: TableRef,
        columns: list[str],
        snapshot: str,
    ) -> dict[str, Any]:
        dest_cfg = step_config.destination
        query = _render(context, step_config.source.query, snapshot)
        params: dict[str, Any] = context.query_params()
        opts = context.query_options
        reconcile = step_config.reconcile
        mode = dest_cfg.write_mode
        replacing = mode in ("overwrite", "overwrite_partition")
        in_transaction = replacing and wh.capabilities.checks_before_commit
        source_sql = _render(context, reconcile.source_query, snapshot) if reconcile else None
        source_totals: list[Row] = []
        if reconcile is not None and source_sql is not None and not in_transaction:
            source_totals = await wh.query(source_sql, params, options=opts)
            # No check before commit here: the load's own output must match the source before
            # anything is written (a lossy query fails and leaves the table untouched).
            output = await wh.query(reconcile.measure_sql(f"({query})"), params, options=opts)
            pre = _compare(context, reconcile, source_totals, output, destination, "reconcile_query_output")
            await rec.record(context, pre, stage="reconcile_query_output")

        window = dest_cfg.partition_column if mode == "overwrite_partition" else None
        committed = True
        dest_rows: list[Row] = []
        if mode == "append":
            loaded = await wh.execute(append_sql(destination, columns, query), params, options=opts)
        elif mode == "merge":
            loaded = await wh.execute(merge_sql(destination, columns, query, dest_cfg.merge_keys), params, options=opts)
        else:
            tolerance = reconcile.tolerance if reconcile else 0.0
            result = await wh.replace_rows(
                destination,
                columns,
                query,
                replace_where=window_condition(window) if window else "TRUE",
                params=params,
                options=opts,
                # Where the write has its own transaction, the source totals are read inside it:
                # the same snapshot as the rows written.
                source_sql=source_sql if in_transaction else None,
                check_sql=reconcile.measure_sql(destination.sql, window) if reconcile else None,
                check=(lambda src, dst: rec.passes(src, dst, context, tolerance)) if reconcile else None,
            )
            loaded, committed, dest_rows = result.inserted, result.committed, result.check_rows
            if in_transaction:
                source_totals = result.source_rows

        checks: list[dict[str, Any]] = []
        if reconcile is not None:
            # The destination must match the source, day by day (checked before the commit where
            # the backend can, else right after the write).
            if not replacing:
                dest_rows = await wh.query(reconcile.measure_sql(destination.sql, window), params, options=opts)
            checks = _compare(context, reconcile, source_totals, dest_rows, destination, "reconcile_source")
            await rec.record(context, checks, stage="after_write" if committed else "rolled_back")
        return {
            "status": "COMPLETED",
            "rows_processed": loaded,
            "destination": str(destination),
            "write_mode": mode,
            "snapshot": "staging table" if snapshot.startswith("`") else ("transaction" if snapshot else None),
            "reconciled_days": len({c["usage_date"] for c in checks}),
            "source_cost": round(sum(c["source_cost"] for c in checks), 6) if checks else None,
            "source_credits": round(sum(c["source_credits"] for c in checks), 6) if checks else None,
        }

    async def estimate(self, step_config: Config, context: StepContext) -> list[dict[str, Any]]:
        """What the step's read of its source costs (dry run): the snapshot's query where there is
        one (every later read is of the snapshot), else the source query."""
        wh = await context.services.warehouse_for(context.run.org_slug)
        sql = context.render_sql(step_config.snapshot.query if step_config.snapshot else step_config.source.query)
        found = await wh.estimate(sql, context.query_params(), options=context.query_options)
        what = "snapshot of the source" if step_config.snapshot else "source query"
        return [{"statement": what, "bytes_processed": found.bytes_processed, "rows": found.rows}]


def _compare(
    context: StepContext, reconcile: Reconcile, source: list[Row], measured: list[Row], target: TableRef, name: str
) -> list[dict[str, Any]]:
    return rec.compare(source, measured, context, target=str(target), check_name=name, tolerance=reconcile.tolerance)


def _render(context: StepContext, sql: str, snapshot: str) -> str:
    """``{snapshot}`` is the processor's own (a staging table or a subquery); the rest is rendered
    from the run's variables."""
    return context.render_sql(sql.replace("{snapshot}", "__snapshot__")).replace("__snapshot__", snapshot)


async def _take_snapshot(
    context: StepContext, wh: Warehouse, snapshot: Snapshot, dataset: str
) -> tuple[TableRef | None, str]:
    """(staging table or None, the SQL text that stands for the snapshot in the step's queries)."""
    query = context.render_sql(snapshot.query)
    if wh.capabilities.snapshot_in_transaction:
        return None, f"({query})"
    tag = context.run.pipeline_logging_id.replace("-", "")
    staging = TableRef(wh.project, dataset, f"_snapshot_{tag}_{context.step.step_id}")
    expires = datetime.now(UTC) + timedelta(hours=snapshot.expiration_hours)
    await wh.create_table_as(staging, query, context.query_params(), options=context.query_options, expires_at=expires)
    return staging, staging.sql


async def _drop_staging(wh: Warehouse, staging: TableRef) -> None:
    try:
        await wh.drop_table(staging)
    except WarehouseError as exc:  # it expires by itself
        log.warning("could not drop a staging table", extra={"table": str(staging), "error": exc.message})


def get_engine() -> BqEtlProcessor:
    return BqEtlProcessor()
