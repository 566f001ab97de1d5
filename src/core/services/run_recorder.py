"""The executor's run and step callbacks, written to the central run tables."""

from __future__ import annotations

from src.core.engine.repositories.quotas import QuotaRepository
from src.core.engine.repositories.runs import RunRepository
from src.core.pipeline.context import RunInfo, RunState, StepOutcome
from src.core.pipeline.models import StepSpec


async def end_run(
    runs: RunRepository,
    quotas: QuotaRepository,
    *,
    pipeline_logging_id: str,
    org_slug: str,
    status: str,
    error: str | None,
    failed_step: str | None = None,
    rows_processed: int = 0,
    from_states: tuple[str, ...] = ("RUNNING",),
    holds_slot: bool = True,
) -> bool:
    """The final state (guarded), then the run's concurrent slot back. Two statements on two
    tables: a process dying between them leaves a count that ``QuotaRepository.resync_concurrent``
    repairs (it recounts from the runs table, which already says the run ended)."""
    ended = await runs.finish(
        pipeline_logging_id=pipeline_logging_id,
        org_slug=org_slug,
        status=status,
        error=error,
        failed_step=failed_step,
        rows_processed=rows_processed,
        from_states=from_states,
    )
    if ended and holds_slot:
        await quotas.release(org_slug)
    return ended


class CentralRunRecorder:
    """Executor callbacks writing to the central tables."""

    def __init__(self, repo: RunRepository, quotas: QuotaRepository, owner: str) -> None:
        self._repo = repo
        self._quotas = quotas
        self._owner = owner

    async def run_started(self, run: RunInfo) -> bool:
        return await self._repo.mark_running(run, self._owner)

    async def run_finished(self, run: RunInfo, state: RunState) -> None:
        await end_run(  # every run admitted through RunService holds one concurrent slot
            self._repo,
            self._quotas,
            pipeline_logging_id=run.pipeline_logging_id,
            org_slug=run.org_slug or "",
            status=state.status,
            error=state.error,
            failed_step=state.failed_step,
            rows_processed=state.rows_processed,
        )

    async def step_started(self, run: RunInfo, step: StepSpec, index: int, outcome: StepOutcome) -> str:
        return await self._repo.insert_step(run, step, index, outcome)

    async def step_finished(self, run: RunInfo, step_log_id: str, outcome: StepOutcome) -> None:
        await self._repo.finish_step(run, step_log_id, outcome)

    async def step_skipped(self, run: RunInfo, step: StepSpec, index: int, outcome: StepOutcome) -> None:
        await self._repo.insert_step(run, step, index, outcome)
