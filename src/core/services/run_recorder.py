"""The executor's run and step callbacks, written to the central run tables."""

from __future__ import annotations

from src.core.engine.repositories.quotas import QuotaRepository
from src.core.engine.repositories.runs import RunRepository
from src.core.pipeline.models import StepSpec
from src.core.run_types import JobStats, RunInfo, RunState, StepOutcome


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
    stats: JobStats | None = None,
) -> bool:
    """The run's concurrent slot back, then its final state (both guarded), so that whoever sees
    the run ended can start the next one. The slot is claimed on the run row first, so it is given
    back once however many callers race to end the run; runs admitted without a quota hold none.
    A process dying between the statements leaves a count that ``QuotaRepository.resync_concurrent``
    repairs once orphan recovery has ended the run."""
    if await runs.claim_slot_release(
        pipeline_logging_id=pipeline_logging_id, org_slug=org_slug, from_states=from_states
    ):
        await quotas.release(org_slug)
    ended = await runs.finish(
        pipeline_logging_id=pipeline_logging_id,
        org_slug=org_slug,
        status=status,
        error=error,
        failed_step=failed_step,
        rows_processed=rows_processed,
        from_states=from_states,
        stats=stats,
    )
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
        await end_run(
            self._repo,
            self._quotas,
            pipeline_logging_id=run.pipeline_logging_id,
            org_slug=run.org_slug or "",
            status=state.status,
            error=state.error,
            failed_step=state.failed_step,
            rows_processed=state.rows_processed,
            stats=state.stats,
        )

    async def step_started(self, run: RunInfo, step: StepSpec, index: int, outcome: StepOutcome) -> str:
        return await self._repo.insert_step(run, step, index, outcome)

    async def step_finished(self, run: RunInfo, step_log_id: str, outcome: StepOutcome) -> None:
        await self._repo.finish_step(run, step_log_id, outcome)

    async def step_skipped(self, run: RunInfo, step: StepSpec, index: int, outcome: StepOutcome) -> None:
        await self._repo.insert_step(run, step, index, outcome)
