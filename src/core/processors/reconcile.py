"""Reconciliation shared by the load processors: per day (and currency), a load's rows, cost and
credits must equal its source's. Each comparison is one DQ row in ``org_meta_dq_results``; any
difference fails the step (not retried: it is deterministic).

Not a processor itself (no ``get_engine``): ``gcp.bq_etl`` and the AWS loader use it.
"""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from src.core.engine.base import Row
from src.core.engine.loads import measures_sql
from src.core.engine.sql import quote_column
from src.core.errors import StepFailedError
from src.core.pipeline.context import StepContext

STAGES = {
    "reconcile_query_output": "before writing (nothing was written)",
    "rolled_back": "before commit (the write was rolled back)",
    "after_write": "after writing",
}


class Reconcile(BaseModel):
    """``source_query`` returns (usage_date, currency, row_count, cost, credits) per day (and
    currency) of the source; the load's output and the destination are measured on the named
    columns and must agree."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    source_query: str
    date_column: str
    cost_column: str
    credits_column: str | None = None
    currency_column: str | None = None
    tolerance: float = Field(1e-6, ge=0, le=0.005)

    def measure_sql(
        self, relation: str, window_column: str | None = None, low: str = "start_date", high: str = "end_date"
    ) -> str:
        """Per day (and currency) of ``relation``, only rows whose ``window_column`` lies between the
        parameters ``low`` and ``high`` when it is given."""
        where = f"WHERE r.{quote_column(window_column)} BETWEEN @{low} AND @{high}" if window_column else ""
        return measures_sql(
            relation,
            date_column=self.date_column,
            cost_column=self.cost_column,
            credits_column=self.credits_column,
            currency_column=self.currency_column,
            where=where,
        )


def _window_days(context: StepContext) -> list[date]:
    start, end = context.variables.get("start_date"), context.variables.get("end_date")
    if not isinstance(start, date) or not isinstance(end, date):
        return []
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def close(a: float, b: float, tolerance: float) -> bool:
    """Equal within ``tolerance`` (absolute, default a millionth of a currency unit), widened for
    very large sums by FLOAT64's own summation error (about 1e-9 of the total): the same rows
    summed in another order must not fail a load."""
    return abs(a - b) <= max(tolerance, 1e-9 * max(abs(a), abs(b)))


def _key(row: Row) -> tuple[date, str | None]:
    return row["usage_date"], row.get("currency")


def compare(
    source: list[Row], measured: list[Row], context: StepContext, *, target: str, check_name: str, tolerance: float
) -> list[dict[str, Any]]:
    """DQ rows: one per day (and currency) seen on either side, and one per day of the window with
    no data at all (0 = 0 passes)."""
    by_src = {_key(r): r for r in source}
    by_dst = {_key(r): r for r in measured}
    keys = set(by_src) | set(by_dst)
    keys |= {(day, None) for day in _window_days(context) if not any(k[0] == day for k in keys)}
    now = datetime.now(UTC)
    checks = []
    for key in sorted(keys, key=lambda k: (k[0], k[1] or "")):
        src, dst = by_src.get(key, {}), by_dst.get(key, {})
        s_rows, d_rows = int(src.get("row_count") or 0), int(dst.get("row_count") or 0)
        s_cost, d_cost = float(src.get("cost") or 0), float(dst.get("cost") or 0)
        s_cred, d_cred = float(src.get("credits") or 0), float(dst.get("credits") or 0)
        problems = []
        if s_rows != d_rows:
            problems.append(f"rows {d_rows} != source {s_rows}")
        if not close(s_cost, d_cost, tolerance):
            problems.append(f"cost {d_cost:.6f} != source {s_cost:.6f}")
        if not close(s_cred, d_cred, tolerance):
            problems.append(f"credits {d_cred:.6f} != source {s_cred:.6f}")
        checks.append(
            {
                "dq_result_id": f"dq_{secrets.token_hex(8)}",
                "pipeline_logging_id": context.run.pipeline_logging_id,
                "org_slug": context.run.org_slug or "",
                "step_id": context.step.step_id,
                "check_name": check_name,
                "target_table": target,
                "usage_date": key[0],
                "currency": key[1],
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


def passes(source: list[Row], measured: list[Row], context: StepContext, tolerance: float) -> bool:
    return all(c["passed"] for c in compare(source, measured, context, target="", check_name="", tolerance=tolerance))


async def record(context: StepContext, checks: list[dict[str, Any]], *, stage: str) -> list[dict[str, Any]]:
    """Keep the DQ rows (written with the run's step logs when it ends); fail the step on any
    difference, saying at which stage it was found."""
    context.state.dq_results.extend(checks)
    failed = [c for c in checks if not c["passed"]]
    if failed:
        raise StepFailedError(
            f"reconciliation failed {STAGES[stage]} for {len(failed)} day(s): "
            + "; ".join(
                f"{c['usage_date']}{' ' + c['currency'] if c.get('currency') else ''}: {c['message']}"
                for c in failed[:5]
            ),
            code="reconciliation_failed",
            retryable=False,
        )
    return checks
