"""Dry runs: ``"dry_run": true`` on the run route. What a run would read — per statement a dry-run
job's bytes on BigQuery, the rows of the window on DuckDB — with nothing started, admitted or
counted against a quota. Steps whose processor has no ``estimate`` read nothing worth estimating
(notifications) or only what an earlier step produced (a snapshot of this run). A FOCUS rebuild
(``focus.build``) reads the org's cost table as it is now: for days the run loads again that is
what it will read after the load; for new days (or a new org) it is less."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from src.core.pipeline.context import StepContext
from src.core.pipeline.loader import LoadedPipeline
from src.core.run_types import RunInfo, RunState, StepOutcome

if TYPE_CHECKING:
    from src.core.services.container import Services
    from src.core.services.runs import Caller


async def estimate_run(
    services: Services, pipeline: LoadedPipeline, *, caller: Caller, params: dict[str, Any]
) -> dict[str, Any]:
    run_id, trigger, window, pipeline_id, variables = await services.run_service.prepare(pipeline, caller, params)
    run = RunInfo(run_id, pipeline_id, pipeline.path, caller.org_slug, trigger, record=False)
    state = RunState(started_at=datetime.now(UTC))
    statements: list[dict[str, Any]] = []
    for step in pipeline.spec.steps:
        processor = services.registry.get(step.ps_type)
        estimate = getattr(processor.engine, "estimate", None)
        if not step.enabled or estimate is None:
            continue
        state.steps[step.step_id] = StepOutcome(step_id=step.step_id, status="PENDING")
        context = StepContext(run=run, step=step, variables=variables, state=state, services=services)
        for found in await estimate(pipeline.step_configs[step.step_id], context):
            statements.append({"step_id": step.step_id, **found})
    byte_figures = [s["bytes_processed"] for s in statements if s.get("bytes_processed") is not None]
    row_figures = [s["rows"] for s in statements if s.get("rows") is not None]
    total_bytes = sum(byte_figures) if byte_figures else None
    price = services.settings.bigquery_price_per_tib_usd
    return {
        "dry_run": True,
        "org_slug": caller.org_slug,
        "pipeline_id": pipeline_id,
        "pipeline_path": pipeline.path,
        "start_date": window.start_date if window else None,
        "end_date": window.end_date if window else None,
        "warehouse": services.warehouse.capabilities.name,
        "statements": statements,
        "total_bytes_processed": total_bytes,
        "total_rows": sum(row_figures) if row_figures else None,
        "estimated_cost_usd": round(total_bytes / 2**40 * price, 6) if total_bytes is not None else None,
        "price_per_tib_usd": price,
        # Where bytes are billed, every tenant query is capped at this (MAXIMUM_BYTES_BILLED).
        "maximum_bytes_billed_per_query": services.settings.maximum_bytes_billed if byte_figures else None,
    }
