"""``aws.s3_data_loader``: an org's AWS Data Export (CUR 2.0) files from its S3 bucket into an org table.

For each billing period of the run's window (``start_period`` .. ``end_period``), the period's latest
manifest is read and exactly the data files it lists are downloaded (``cur_files``) — with the org's
own credentials, never the service's. Then, rows never passing through Python:

* the files become ``{files}``, one relation with the columns of ``source.columns_file`` (absent
  columns NULL, maps as JSON text): on DuckDB a view over the downloaded files, read by DuckDB
  itself; on BigQuery a staging table filled by one load job (``Warehouse.stage_files``);
* ``source.query`` (BigQuery SQL over ``{files}``) is written with the destination block's write
  mode (``gcp.bq_etl``'s: ``overwrite_partition`` by default, from ``config.yml``); with
  ``destination.period_column`` the replace covers exactly the window's billing periods, so a
  rerun gives the same table and a newer delivery replaces an older one completely;
* ``reconcile`` compares, per day and currency, rows and cost of the files with the destination:
  on DuckDB inside the write's transaction (a mismatch rolls it back), on BigQuery the files'
  totals (read from the files by a local DuckDB) against the load's output before the atomic
  MERGE, and the destination right after it. DQ rows go to ``org_meta_dq_results``.

The staging relation and the downloaded files are removed when the step ends (the staging table
also expires by itself).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from src.core.engine.base import Row, Warehouse
from src.core.engine.export_files import FileSet, LocalFiles, describe
from src.core.engine.loads import append_sql, merge_sql, window_condition
from src.core.engine.sql import TableRef
from src.core.errors import ConfigError, StepFailedError, WarehouseError
from src.core.pipeline.context import StepContext
from src.core.processors import reconcile as rec
from src.core.processors.aws import cur_files
from src.core.processors.aws.loader_config import (
    PS_TYPE,
    TEMPLATES_FILE,
    Config,
    check_config,
    check_defaults,
    columns_schema,
    defaults,
)
from src.core.processors.destination import destination_ref, ensure_table, load_templates

__all__ = ["PS_TYPE", "Config", "check_config", "check_defaults", "get_engine"]
TEMPLATE_VARIABLES = frozenset({"files"})
log = logging.getLogger(__name__)


def _periods(variables: dict[str, Any]) -> list[str]:
    """The run's billing periods: its month window, else the months of its day window."""
    start, end = variables.get("start_date"), variables.get("end_date")
    if not isinstance(start, date) or not isinstance(end, date):
        raise ConfigError(PS_TYPE, "window", "the loader needs a run window (billing periods or days)")
    found, day = [], start.replace(day=1)
    while day <= end:
        found.append(day.strftime("%Y-%m"))
        day = (day + timedelta(days=32)).replace(day=1)
    return found


class S3DataLoader:
    async def execute(self, cfg: Config, context: StepContext) -> dict[str, Any]:
        s = context.services
        org_slug = context.run.org_slug or ""
        periods = _periods(context.variables)
        export = await s.aws_export_for(org_slug)
        folder = s.settings.aws_download_dir
        if folder is not None:
            await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        tmp = await asyncio.to_thread(tempfile.mkdtemp, prefix="cur-", dir=folder)
        started = time.perf_counter()
        try:
            fetched = await cur_files.fetch(
                export,
                periods,
                Path(tmp),
                required=cfg.source.required_columns,
                max_files=cfg.max_files or defaults(s.settings.configs_dir).max_files,
                max_bytes=s.settings.aws_max_download_bytes,
                org_slug=org_slug,
            )
            fetched_in = time.perf_counter() - started
            result = await self._load(cfg, context, fetched)
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
        result.update(
            billing_periods=periods,
            manifests=fetched.summary(export.source.bucket),
            files=len(fetched.paths),
            bytes_downloaded=fetched.bytes,
            download_seconds=round(fetched_in, 3),
        )
        return result

    async def _load(self, cfg: Config, context: StepContext, fetched: cur_files.FetchedFiles) -> dict[str, Any]:
        s = context.services
        schema = columns_schema(s.settings.configs_dir, cfg.source.columns_file)
        file_columns = await asyncio.to_thread(describe, fetched.paths, fetched.fmt)
        wanted = {f.name.lower() for f in schema} & fetched.columns
        lacking = sorted(wanted - set(file_columns))
        if lacking and fetched.paths:
            raise StepFailedError(
                f"the manifests list column {lacking[0]} but the data files do not have it", retryable=False
            )
        files = FileSet(fetched.paths, fetched.fmt, {c: file_columns[c] for c in wanted})
        wh = await s.warehouse_for(context.run.org_slug)
        dest_cfg = cfg.destination
        destination = destination_ref(context, wh, dest_cfg)
        template = load_templates(s.settings.configs_dir, TEMPLATES_FILE)[dest_cfg.schema_template]
        await ensure_table(context, destination, template, dest_cfg)
        tag = context.run.pipeline_logging_id.replace("-", "")
        staged = TableRef(wh.project, destination.dataset, f"_files_{tag}_{context.step.step_id}")
        hours = cfg.staging_expiration_hours or defaults(s.settings.configs_dir).staging_expiration_hours
        expires = datetime.now(UTC) + timedelta(hours=hours)
        opts = context.query_options
        await wh.stage_files(staged, files, schema, expires_at=expires, options=opts)
        try:
            local = LocalFiles(files, schema, staged, threads=s.settings.duckdb_threads, memory_limit="1GB")
            return await self._write(cfg, context, wh, destination, staged, local)
        finally:
            try:
                await wh.drop_staged(staged)
            except WarehouseError as exc:  # it expires by itself
                log.warning("could not drop a staging relation", extra={"table": str(staged), "error": exc.message})

    async def _write(
        self,
        cfg: Config,
        context: StepContext,
        wh: Warehouse,
        destination: TableRef,
        staged: TableRef,
        local: LocalFiles,
    ) -> dict[str, Any]:
        s = context.services
        dest_cfg = cfg.destination
        mode = dest_cfg.write_mode or defaults(s.settings.configs_dir).write_mode
        template = load_templates(s.settings.configs_dir, TEMPLATES_FILE)[dest_cfg.schema_template]
        columns = [f.name for f in template]
        query = context.render_sql(cfg.source.query.replace("{files}", "__files__")).replace("__files__", staged.sql)
        params = context.query_params()
        opts = context.query_options
        reconcile = cfg.reconcile
        source_sql = None
        if reconcile is not None:
            source_sql = context.render_sql(reconcile.source_query.replace("{files}", "__files__")).replace(
                "__files__", staged.sql
            )
        # What a replace covers: the window's billing periods, else its days (the partition column).
        if dest_cfg.period_column:
            window: tuple[str, str, str] | None = (dest_cfg.period_column, "start_period", "end_period")
        elif dest_cfg.partition_column:
            window = (dest_cfg.partition_column, "start_date", "end_date")
        else:
            window = None
        replacing = mode in ("overwrite", "overwrite_partition")
        covered = window if mode == "overwrite_partition" else None
        in_transaction = replacing and wh.capabilities.checks_before_commit
        source_totals: list[Row] = []
        if reconcile is not None and source_sql is not None and not in_transaction:
            # The files' own totals (read from the files here), then the load's output, before writing.
            source_totals = await local.query(source_sql, params)
            measured = reconcile.measure_sql(f"({query})", *(covered or (None,)))
            output = await wh.query(measured, params, options=opts)
            pre = self._compare(context, reconcile, source_totals, output, destination, "reconcile_query_output")
            await rec.record(context, pre, stage="reconcile_query_output")
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
                replace_where=window_condition(*covered) if covered else "TRUE",
                params=params,
                options=opts,
                source_sql=source_sql if in_transaction else None,
                check_sql=reconcile.measure_sql(destination.sql, *(covered or (None,))) if reconcile else None,
                check=(lambda src, dst: rec.passes(src, dst, context, tolerance)) if reconcile else None,
            )
            loaded, committed, dest_rows = result.inserted, result.committed, result.check_rows
            if in_transaction:
                source_totals = result.source_rows
        checks: list[dict[str, Any]] = []
        if reconcile is not None:
            if not replacing:
                dest_rows = await wh.query(reconcile.measure_sql(destination.sql, *(covered or (None,))), params)
            checks = self._compare(context, reconcile, source_totals, dest_rows, destination, "reconcile_source")
            await rec.record(context, checks, stage="after_write" if committed else "rolled_back")
            if replacing:  # the replaced window's rows, counted: a MERGE's affected rows include deleted ones
                loaded = sum(int(c["dest_rows"]) for c in checks)
        return {
            "status": "COMPLETED",
            "rows_processed": loaded,
            "destination": str(destination),
            "write_mode": mode,
            "reconciled_days": len({c["usage_date"] for c in checks}),
            "source_cost": round(sum(c["source_cost"] for c in checks), 6) if checks else None,
        }

    async def estimate(self, cfg: Config, context: StepContext) -> list[dict[str, Any]]:
        """A dry run: each period's newest manifest, its files and their bytes (nothing downloaded)."""
        org_slug = context.run.org_slug or ""
        export = await context.services.aws_export_for(org_slug)
        return await cur_files.plan(export, _periods(context.variables), required=cfg.source.required_columns)

    @staticmethod
    def _compare(
        context: StepContext,
        reconcile: rec.Reconcile,
        source: list[Row],
        measured: list[Row],
        target: TableRef,
        name: str,
    ) -> list[dict[str, Any]]:
        return rec.compare(
            source, measured, context, target=str(target), check_name=name, tolerance=reconcile.tolerance
        )


def get_engine() -> S3DataLoader:
    return S3DataLoader()
