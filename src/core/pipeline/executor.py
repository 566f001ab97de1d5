"""The async pipeline executor: walks a pipeline's steps as a DAG and runs their processors.

Order: a step waits for its ``depends_on``; without it, a step waits for the step before it in
the file, unless it is ``parallel``. When a step's dependencies are done its ``trigger`` is
evaluated against the steps before it (its ancestors):

* ``on_success``    runs if no ancestor failed the run and the run is not stopping;
* ``on_failure``    runs if an ancestor failed the run;
* ``on_completion`` runs whatever the outcome (not after a cancel or a pipeline timeout);
* ``always``        runs whatever happened, also after a cancel or timeout.

A failed step with ``on_failure: stop`` fails the run and skips every later ``on_success`` step;
``skip`` fails the run and skips only its dependents; ``continue`` records the failure and does not
fail the run. ``timeout_minutes`` cancels that step only; ``retries`` re-runs a failed attempt with
exponential backoff. A processor that returns ``{"status": "FAILED"}`` has failed; one that returns
``{"status": "SKIPPED", "reason": ...}`` (e.g. e-mail without SMTP settings) is recorded SKIPPED with
that reason, which is not a failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from src.core.errors import (
    ConfigError,
    ServiceError,
    StepFailedError,
    TransientWarehouseError,
    ValidationFailedError,
    WarehouseAccessDeniedError,
    WarehouseError,
    WarehouseNotFoundError,
)
from src.core.pipeline.context import StepContext
from src.core.pipeline.loader import LoadedPipeline
from src.core.pipeline.models import StepSpec
from src.core.pipeline.ports import StepServices
from src.core.pipeline.registry import ProcessorRegistry
from src.core.run_types import FINAL_STEP_STATES, RunInfo, RunState, StepOutcome

log = logging.getLogger(__name__)

_NOT_RETRIED = (ConfigError, ValidationFailedError)


class RunRecorder(Protocol):
    """Where run and step progress goes (the central tables, or nowhere for setup pipelines)."""

    async def run_started(self, run: RunInfo) -> bool: ...
    async def run_finished(self, run: RunInfo, state: RunState) -> None: ...
    async def step_started(self, run: RunInfo, step: StepSpec, index: int, outcome: StepOutcome) -> str: ...
    async def step_finished(self, run: RunInfo, step_log_id: str, outcome: StepOutcome) -> None: ...
    async def step_skipped(self, run: RunInfo, step: StepSpec, index: int, outcome: StepOutcome) -> None: ...


class NullRecorder:
    async def run_started(self, run: RunInfo) -> bool:
        return True

    async def run_finished(self, run: RunInfo, state: RunState) -> None:
        return None

    async def step_started(self, run: RunInfo, step: StepSpec, index: int, outcome: StepOutcome) -> str:
        return ""

    async def step_finished(self, run: RunInfo, step_log_id: str, outcome: StepOutcome) -> None:
        return None

    async def step_skipped(self, run: RunInfo, step: StepSpec, index: int, outcome: StepOutcome) -> None:
        return None


@dataclass(frozen=True, slots=True)
class RunResult:
    status: str
    state: RunState


def _tenant_safe(exc: WarehouseError) -> str:
    """What a tenant may read of a warehouse error (run/step logs, notifications): driver text can
    name SQL, other datasets or hints about them, so it stays in the service log."""
    if isinstance(exc, TransientWarehouseError):
        return "the warehouse was temporarily unavailable (retried); details are in the service log"
    if isinstance(exc, WarehouseNotFoundError):
        return "a table this step reads or writes does not exist (check the billing source); details in the service log"
    if isinstance(exc, WarehouseAccessDeniedError):
        return "the warehouse denied access to a table this step uses (check the grants); details in the service log"
    return "the warehouse refused a statement of this step; details are in the service log"


def _dependencies(steps: tuple[StepSpec, ...]) -> dict[str, tuple[str, ...]]:
    deps: dict[str, tuple[str, ...]] = {}
    previous: str | None = None
    for step in steps:
        if step.depends_on:
            deps[step.step_id] = step.depends_on
        elif step.parallel or previous is None:
            deps[step.step_id] = ()
        else:
            deps[step.step_id] = (previous,)
        previous = step.step_id
    return deps


def _ancestors(deps: Mapping[str, tuple[str, ...]]) -> dict[str, set[str]]:
    result: dict[str, set[str]] = {}
    for step_id, direct in deps.items():  # deps only point backwards, so one pass suffices
        found: set[str] = set(direct)
        for d in direct:
            found |= result[d]
        result[step_id] = found
    return result


class PipelineExecutor:
    def __init__(self, *, registry: ProcessorRegistry, services: StepServices) -> None:
        self._registry = registry
        self._services = services

    async def run(
        self,
        pipeline: LoadedPipeline,
        run: RunInfo,
        variables: dict[str, Any],
        recorder: RunRecorder,
    ) -> RunResult:
        state = RunState(started_at=datetime.now(UTC))
        if not await recorder.run_started(run):
            state.status = "CANCELLED"
            return RunResult("CANCELLED", state)
        timeout = pipeline.spec.timeout_minutes
        try:
            if timeout:
                await asyncio.wait_for(self._walk(pipeline, run, variables, recorder, state), timeout * 60)
            else:
                await self._walk(pipeline, run, variables, recorder, state)
        except TimeoutError:
            state.timed_out = True
            state.error = f"pipeline timed out after {timeout:g} minutes"
            await self._walk(pipeline, run, variables, recorder, state, only_always=True)
        except asyncio.CancelledError as exc:
            state.cancelled = True
            state.error = f"run cancelled {exc.args[0]}" if exc.args and exc.args[0] else "run cancelled"
            await asyncio.shield(self._after_cancel(pipeline, run, variables, recorder, state))
            raise
        await self._finish(run, state, recorder)
        return RunResult(state.status, state)

    async def _after_cancel(
        self,
        pipeline: LoadedPipeline,
        run: RunInfo,
        variables: dict[str, Any],
        recorder: RunRecorder,
        state: RunState,
    ) -> None:
        """``always`` steps still run after a cancel (shielded: the cancel does not reach them)."""
        try:
            await self._walk(pipeline, run, variables, recorder, state, only_always=True)
        finally:
            await self._finish(run, state, recorder)

    async def _finish(self, run: RunInfo, state: RunState, recorder: RunRecorder) -> None:
        if state.cancelled:
            state.status = "CANCELLED"
        elif state.timed_out or state.failed:
            state.status = "FAILED"
        else:
            state.status = "COMPLETED"
        if state.status == "FAILED" and state.error is None:
            failed = next((s for s in state.steps.values() if s.counts_as_failure), None)
            if failed:
                state.failed_step, state.error = failed.step_id, failed.error
        await recorder.run_finished(run, state)

    async def _walk(
        self,
        pipeline: LoadedPipeline,
        run: RunInfo,
        variables: dict[str, Any],
        recorder: RunRecorder,
        state: RunState,
        *,
        only_always: bool = False,
    ) -> None:
        steps = pipeline.spec.steps
        index = {s.step_id: i for i, s in enumerate(steps)}
        deps = _dependencies(steps)
        ancestors = _ancestors(deps)
        skipped_for_failure: set[str] = set()
        running: dict[asyncio.Task[None], str] = {}
        stopping = False
        try:
            while True:
                for step in steps:
                    sid = step.step_id
                    if sid in state.steps or any(
                        d not in state.steps or state.steps[d].status not in FINAL_STEP_STATES for d in deps[sid]
                    ):
                        continue
                    reason = self._skip_reason(step, ancestors[sid], state, skipped_for_failure, stopping, only_always)
                    outcome = StepOutcome(step_id=sid, status="PENDING")
                    state.steps[sid] = outcome
                    if reason is not None:
                        outcome.status, outcome.error = "SKIPPED", reason
                        if step.trigger == "on_success" and reason != "disabled":
                            skipped_for_failure.add(sid)
                        await recorder.step_skipped(run, step, index[sid], outcome)
                        continue
                    task = asyncio.create_task(
                        self._run_step(pipeline, run, variables, recorder, state, step, index[sid], outcome)
                    )
                    running[task] = sid
                if not running:
                    # Dependencies point backwards, so one pass in file order settles every step
                    # that is not waiting on a running one.
                    return
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    sid = running.pop(task)
                    task.result()
                    outcome = state.steps[sid]
                    if outcome.counts_as_failure and self._on_failure(steps[index[sid]]) == "stop":
                        stopping = True
                        skipped_for_failure.add(sid)
                    elif outcome.counts_as_failure:
                        skipped_for_failure.add(sid)
        except BaseException:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            for outcome in state.steps.values():
                if outcome.status in {"PENDING", "RUNNING"}:  # cancelled before it could record
                    outcome.status, outcome.error = "CANCELLED", "run cancelled"
            raise

    def _on_failure(self, step: StepSpec) -> str:
        return step.on_failure or self._registry.get(step.ps_type).default_on_failure

    @staticmethod
    def _skip_reason(
        step: StepSpec,
        ancestors: set[str],
        state: RunState,
        skipped_for_failure: set[str],
        stopping: bool,
        only_always: bool,
    ) -> str | None:
        if not step.enabled:
            return "disabled"
        if only_always and step.trigger != "always":
            return "run cancelled or timed out"
        failed_before = any(a in skipped_for_failure or state.steps[a].counts_as_failure for a in ancestors)
        if step.trigger == "on_success":
            if stopping or failed_before:
                return "skipped: an earlier step failed"
            return None
        if step.trigger == "on_failure":
            return None if (failed_before or stopping) else "skipped: no earlier step failed"
        return None  # on_completion, always

    async def _run_step(
        self,
        pipeline: LoadedPipeline,
        run: RunInfo,
        variables: dict[str, Any],
        recorder: RunRecorder,
        state: RunState,
        step: StepSpec,
        index: int,
        outcome: StepOutcome,
    ) -> None:
        processor = self._registry.get(step.ps_type)
        outcome.status = "RUNNING"
        outcome.started_at = datetime.now(UTC)
        step_log_id = await recorder.step_started(run, step, index, outcome)
        context = StepContext(run=run, step=step, variables=variables, state=state, services=self._services)
        config = pipeline.step_configs[step.step_id]
        timeout = step.timeout_minutes * 60 if step.timeout_minutes else None
        backoff = self._services.settings.step_retry_backoff_seconds
        try:
            for attempt in range(1, step.retries + 2):
                outcome.attempts = attempt
                error, retryable = await self._attempt(processor.engine, config, context, outcome, timeout)
                if error is None:
                    outcome.status = "COMPLETED"
                    if str(outcome.result.get("status", "")).upper() == "SKIPPED":
                        outcome.status = "SKIPPED"
                        outcome.error = str(outcome.result.get("reason") or "skipped by the processor")
                    break
                outcome.error = error
                if not retryable or attempt > step.retries:
                    outcome.status = "FAILED"
                    outcome.counts_as_failure = self._on_failure(step) != "continue"
                    break
                log.warning(
                    "step attempt failed, retrying",
                    extra={"step_id": step.step_id, "attempt": attempt, "error": error},
                )
                await asyncio.sleep(backoff * 2 ** (attempt - 1))
        except asyncio.CancelledError:
            outcome.status, outcome.error = "CANCELLED", "run cancelled"
            outcome.completed_at = datetime.now(UTC)
            await asyncio.shield(recorder.step_finished(run, step_log_id, outcome))
            raise
        outcome.completed_at = datetime.now(UTC)
        await recorder.step_finished(run, step_log_id, outcome)

    async def _attempt(
        self,
        engine: Any,
        config: Any,
        context: StepContext,
        outcome: StepOutcome,
        timeout: float | None,
    ) -> tuple[str | None, bool]:
        """One attempt; returns (error or None, whether a retry may help)."""
        try:
            result = await asyncio.wait_for(engine.execute(config, context), timeout)
        except TimeoutError:
            return f"step timed out after {timeout / 60:g} minutes", False  # type: ignore[operator]
        except _NOT_RETRIED as exc:
            outcome.exception = exc
            return exc.message, False
        except ServiceError as exc:
            outcome.exception = exc
            log.warning("step failed", extra={"step_id": context.step.step_id, "error": exc.message})
            if isinstance(exc, StepFailedError):
                return exc.message, exc.retryable
            if isinstance(exc, WarehouseError):
                return _tenant_safe(exc), isinstance(exc, TransientWarehouseError)
            return exc.message, not (400 <= exc.status_code < 500)
        except Exception:
            log.exception("step raised", extra={"step_id": context.step.step_id})
            return "unexpected error in the processor (see service logs)", True
        result = dict(result or {})
        outcome.result = result
        outcome.rows_processed = int(result.get("rows_processed") or 0)
        if str(result.get("status", "COMPLETED")).upper() == "FAILED":
            return str(result.get("error") or "step reported FAILED"), bool(result.get("retryable", False))
        return None, False
