"""The executor's run and step callbacks, written to the central run tables.

Nothing is written while a run goes: its steps' progress stays in memory (``progress``, published
by the instance's heartbeat, one statement for all its runs). When it ends, its step logs and DQ
results are appended in one INSERT each, its concurrent slot is given back and its final state is
set — the last two are the only mutating statements of a run after its admission.
"""

from __future__ import annotations

import json
import logging

from src.core.engine.repositories.quotas import QuotaRepository
from src.core.engine.repositories.runs import RunRepository
from src.core.pipeline.models import StepSpec
from src.core.run_types import JobStats, RunInfo, RunState, StepOutcome

log = logging.getLogger(__name__)


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
    stats: JobStats | None = None,
) -> bool:
    """The run's concurrent slot back, then its final state, both guarded: however many callers
    race to end a run (its task, orphan recovery on another instance), the slot comes back once
    and one of them sets the state. True for the caller that ended it. A process dying between
    the two leaves a slot that ``QuotaRepository.stale_slots`` finds once the run has ended."""
    await quotas.release(org_slug, pipeline_logging_id)
    return await runs.finish(
        pipeline_logging_id=pipeline_logging_id,
        org_slug=org_slug,
        status=status,
        error=error,
        failed_step=failed_step,
        rows_processed=rows_processed,
        stats=stats,
    )


class CentralRunRecorder:
    """Executor callbacks for one run, writing to the central tables when it ends."""

    def __init__(self, repo: RunRepository, quotas: QuotaRepository) -> None:
        self._repo = repo
        self._quotas = quotas
        self._steps: dict[str, tuple[StepSpec, int, StepOutcome]] = {}

    def progress(self) -> str:
        """The run's steps so far, as JSON (what the heartbeat publishes on the run row)."""
        return json.dumps(
            [
                {
                    "step_id": step.step_id,
                    "step_index": index,
                    "status": o.status,
                    "attempts": o.attempts,
                    "started_at": o.started_at.isoformat() if o.started_at else None,
                    "completed_at": o.completed_at.isoformat() if o.completed_at else None,
                }
                for step, index, o in sorted(self._steps.values(), key=lambda s: s[1])
            ],
            separators=(",", ":"),
        )

    async def run_started(self, run: RunInfo) -> bool:
        return True  # the run row was written RUNNING when the run was admitted

    async def run_finished(self, run: RunInfo, state: RunState) -> None:
        try:
            await self._repo.insert_steps(run, sorted(self._steps.values(), key=lambda s: s[1]))
            await self._repo.insert_dq_results(state.dq_results)
        except Exception:  # the run still ends: its outcome matters more than its step logs
            log.exception("could not write the run's step logs", extra={"pipeline_logging_id": run.pipeline_logging_id})
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
        self._steps[step.step_id] = (step, index, outcome)  # the outcome is updated in place
        return step.step_id

    async def step_finished(self, run: RunInfo, step_log_id: str, outcome: StepOutcome) -> None:
        return None

    async def step_skipped(self, run: RunInfo, step: StepSpec, index: int, outcome: StepOutcome) -> None:
        self._steps[step.step_id] = (step, index, outcome)
