"""``focus.build``: rebuild the org's FOCUS rows (``focus_cost``) of one provider for the run's days.

A cost pipeline runs it as its own step after the load: the provider's mapping
(``configs/focus/<provider>_focus_mapping.sql``, BigQuery SQL over the provider table, documented
column by column) reads the provider table's rows of what the load replaced, and the rows of
``focus_cost`` with ``x_Provider`` = the provider and, by ``replace``, ``x_UsageDate`` in the run's
window (``days``: loads that replace days) or ``BillingPeriodStart`` in it (``billing_periods``: loads
that replace whole billing periods, the window being their first to last day) are replaced by them
atomically (``Warehouse.replace_rows``): a rerun gives the same table, other providers' rows are never
touched.

Reconciled like the loads (``processors/reconcile.py``): per day and currency, the FOCUS rows'
count, ``SUM(BilledCost)`` (and ``SUM(x_CreditAmount)`` where the provider has credits on its rows)
must equal the provider table's rows, gross cost (and credits), to the cent by default. DQ rows
(check ``reconcile_focus_<provider>``) go to ``org_meta_dq_results``; a difference fails the step
and, where the warehouse checks before the commit (DuckDB), rolls the write back. On BigQuery the
mapping's output is checked before the one-statement MERGE and the table right after it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from src.core.engine.base import Row, Warehouse
from src.core.engine.loads import window_condition
from src.core.engine.schema import Schema, TableOptions, load_schema_file, validate_options
from src.core.engine.sql import TableRef
from src.core.engine.translate import output_columns
from src.core.errors import ConfigError
from src.core.pipeline.context import StepContext
from src.core.placeholders import PLACEHOLDER_RE
from src.core.processors import reconcile as rec
from src.core.processors.reconcile import Reconcile

TEMPLATE_VARIABLES = frozenset({"source_table"})
SCHEMA_FILE = Path("focus/focus_cost_schema.json")
MAPPING_PLACEHOLDERS = frozenset({"source_table"})
PARTITION_COLUMN = "x_UsageDate"
PROVIDER_COLUMN = "x_Provider"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Destination(_Strict):
    dataset: str = "{org_dataset}"
    table: str = "focus_cost"
    table_config: TableOptions = TableOptions()


class Config(_Strict):
    mapping: str = Field(description="The provider's mapping, relative to configs/ (focus/*.sql).")
    provider: str = Field(pattern=r"^[a-z][a-z0-9_]{1,15}$", description="x_Provider of the rows it writes.")
    source_table: str = Field(description="The provider table in the org's dataset ({source_table} in the SQL).")
    replace: Literal["days", "billing_periods"] = Field(
        "days", description="What the load replaced: the window's days, or the billing periods of its months."
    )
    destination: Destination = Destination()
    reconcile: Reconcile

    @field_validator("mapping")
    @classmethod
    def _inside_focus(cls, value: str) -> str:
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or path.parts[:1] != ("focus",) or path.suffix != ".sql":
            raise ValueError("must be a .sql file under configs/focus/")
        return value


@lru_cache(maxsize=8)
def focus_schema(configs_dir: Path) -> Schema:
    return load_schema_file(configs_dir / SCHEMA_FILE, root=configs_dir)


@lru_cache(maxsize=16)
def mapping_sql(configs_dir: Path, mapping: str) -> str:
    path = configs_dir / mapping
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(mapping, "", "file not found") from None


def check_mapping(configs_dir: Path, mapping: str) -> None:
    """The mapping parses as BigQuery SQL, uses only ``{source_table}``, returns exactly the columns
    of ``focus_cost`` and says above each of them where it comes from (a ``--`` comment)."""
    text = mapping_sql(configs_dir, mapping)
    unknown = sorted(set(PLACEHOLDER_RE.findall(text)) - MAPPING_PLACEHOLDERS)
    if unknown:
        raise ConfigError(mapping, "", f"unknown placeholder {{{unknown[0]}}} (only {{source_table}})")
    try:
        columns = output_columns(text.replace("{source_table}", "p.d.t"))
    except Exception as exc:  # noqa: BLE001 - any parse failure is a config error with the file's name
        raise ConfigError(mapping, "", f"not a BigQuery query: {exc}") from None
    expected = [f.name for f in focus_schema(configs_dir)]
    missing, extra = sorted(set(expected) - set(columns)), sorted(set(columns) - set(expected))
    if missing or extra or len(columns) != len(set(columns)):
        raise ConfigError(mapping, "", f"columns differ from {SCHEMA_FILE}: missing {missing}, unexpected {extra}")
    for number, line in enumerate(text.splitlines(), 1):
        if "--" in line and re.search(r"@[A-Za-z_]", line[line.index("--") :]):
            # the local BigQuery emulator counts an @name inside a comment as a query parameter
            raise ConfigError(mapping, f"line {number}", "no @parameter names in comments")
    if text.rstrip().splitlines()[-1].lstrip().startswith("--"):
        raise ConfigError(mapping, "", "must not end with a comment (the query is wrapped in parentheses)")
    final = text[text.rindex("\nSELECT\n") : text.rindex("\nFROM ")]
    documented: dict[str, bool] = {}
    chunk: list[str] = []
    for line in final.splitlines()[2:]:
        chunk.append(line.strip())
        ended = re.search(r"\bAS (\w+),?$", line.rstrip())
        if ended and not line.lstrip().startswith("--"):
            documented[ended.group(1)] = chunk[0].startswith("--")
            chunk = []
    undocumented = [c for c in columns if not documented.get(c)]
    if undocumented:
        raise ConfigError(mapping, undocumented[0], "each output column needs a comment above it naming its source")


def check_config(config: Config, configs_dir: Path, file: str, where: str) -> None:
    """Load-time checks that need ``configs/`` (called by the pipeline loader)."""
    check_mapping(configs_dir, config.mapping)
    schema = focus_schema(configs_dir)
    validate_options(config.destination.table_config, schema, source=f"{file}: {where}.destination.table_config")
    names = {f.name for f in schema}
    for column in (config.reconcile.date_column, config.reconcile.cost_column, config.reconcile.credits_column):
        if column and column not in names:
            raise ConfigError(file, f"{where}.reconcile", f"column {column!r} is not a column of focus_cost")


class FocusBuildProcessor:
    async def execute(self, step_config: Config, context: StepContext) -> dict[str, Any]:
        s = context.services
        wh = await s.warehouse_for(context.run.org_slug)
        dest = step_config.destination
        target = TableRef(wh.project, context.render_sql(dest.dataset), context.render_sql(dest.table))
        source = TableRef(wh.project, target.dataset, context.render_sql(step_config.source_table))
        schema = focus_schema(s.settings.configs_dir)
        await _ensure_table(context, target, schema, dest.table_config)
        mapping = mapping_sql(s.settings.configs_dir, step_config.mapping).replace("{source_table}", str(source))
        params: dict[str, Any] = {**context.query_params(), "focus_provider": step_config.provider}
        opts = context.query_options
        reconcile = step_config.reconcile
        source_sql = context.render_sql(reconcile.source_query.replace("{source_table}", "__source__")).replace(
            "__source__", str(source)
        )
        replaced = replaced_condition(step_config.replace)
        mine = f"(SELECT * FROM {target.sql} WHERE {replaced.replace('{t}.', '')})"
        check_sql = reconcile.measure_sql(mine)
        check_name = f"reconcile_focus_{step_config.provider}"
        in_transaction = wh.capabilities.checks_before_commit
        source_totals: list[Row] = []
        if not in_transaction:
            # Nothing is written unless the mapping's own output matches the provider table.
            source_totals = await wh.query(source_sql, params, options=opts)
            output = await wh.query(reconcile.measure_sql(f"({mapping})"), params, options=opts)
            pre = _compare(context, reconcile, source_totals, output, target, f"{check_name}_output")
            await rec.record(context, pre, stage="reconcile_query_output")
        result = await wh.replace_rows(
            target,
            [f.name for f in schema],
            mapping,
            replace_where=replaced,
            params=params,
            options=opts,
            source_sql=source_sql if in_transaction else None,
            check_sql=check_sql,
            check=lambda src, dst: rec.passes(src, dst, context, reconcile.tolerance),
        )
        if in_transaction:
            source_totals = result.source_rows
        checks = _compare(context, reconcile, source_totals, result.check_rows, target, check_name)
        await rec.record(context, checks, stage="after_write" if result.committed else "rolled_back")
        billed: dict[str, float] = {}
        for c in checks:
            if c["currency"]:
                billed[c["currency"]] = round(billed.get(c["currency"], 0.0) + c["dest_cost"], 6)
        return {
            "status": "COMPLETED",
            "rows_processed": result.inserted,
            "destination": str(target),
            "provider": step_config.provider,
            "reconciled_days": len({c["usage_date"] for c in checks}),
            "billed_cost_by_currency": billed,
        }

    async def estimate(self, step_config: Config, context: StepContext) -> list[dict[str, Any]]:
        """What the mapping would read (dry run); the provider table is read once."""
        s = context.services
        wh = await s.warehouse_for(context.run.org_slug)
        dataset = context.render_sql(step_config.destination.dataset)
        source = TableRef(wh.project, dataset, context.render_sql(step_config.source_table))
        if not await wh.table_exists(source):  # nothing to read before the first load
            return [{"statement": f"FOCUS rows ({step_config.provider})", "bytes_processed": None, "rows": None}]
        mapping = mapping_sql(s.settings.configs_dir, step_config.mapping).replace("{source_table}", str(source))
        found = await wh.estimate(mapping, context.query_params(), options=context.query_options)
        what = f"FOCUS rows ({step_config.provider})"
        return [{"statement": what, "bytes_processed": found.bytes_processed, "rows": found.rows}]


def replaced_condition(mode: str) -> str:
    """The rows of ``focus_cost`` a run replaces, as a ``replace_rows`` condition (``{t}.`` columns)."""
    if mode == "billing_periods":
        period = "DATE({t}.BillingPeriodStart) BETWEEN @start_date AND @end_date"
        return f"{{t}}.{PROVIDER_COLUMN} = @focus_provider AND {period}"
    return f"{{t}}.{PROVIDER_COLUMN} = @focus_provider AND {window_condition(PARTITION_COLUMN)}"


def _compare(
    context: StepContext, reconcile: Reconcile, source: list[Row], measured: list[Row], target: TableRef, name: str
) -> list[dict[str, Any]]:
    return rec.compare(source, measured, context, target=str(target), check_name=name, tolerance=reconcile.tolerance)


async def _ensure_table(context: StepContext, ref: TableRef, schema: Schema, options: TableOptions) -> None:
    wh: Warehouse = context.services.warehouse
    await wh.create_dataset(ref.dataset, labels={"org": context.run.org_slug or "", "managed-by": "convergence"})
    if await wh.create_table(ref, schema, options):
        return
    present = {c.lower() for c in await wh.table_columns(ref)}
    missing = [f for f in schema if f.name.lower() not in present and f.mode != "REQUIRED"]
    if missing:
        await wh.add_columns(ref, missing)


def get_engine() -> FocusBuildProcessor:
    return FocusBuildProcessor()
