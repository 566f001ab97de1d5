"""Executor semantics with stand-in processors (unit level: the processors are fakes, the
executor is real)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from src.core.errors import ValidationFailedError
from src.core.pipeline.context import StepContext
from src.core.pipeline.executor import NullRecorder, PipelineExecutor
from src.core.pipeline.loader import LoadedPipeline
from src.core.pipeline.models import PipelineSpec
from src.core.pipeline.registry import Processor, ProcessorRegistry
from src.core.run_types import RunInfo


class Recording:
    def __init__(self) -> None:
        self.events: list[str] = []


class Fake:
    """Behaviour from the step config: sleep, fail, return FAILED, fail N times, record results seen."""

    def __init__(self, log: Recording) -> None:
        self.log = log
        self.calls: dict[str, int] = {}

    async def execute(self, cfg: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        sid = ctx.step.step_id
        self.calls[sid] = self.calls.get(sid, 0) + 1
        self.log.events.append(f"start:{sid}")
        await asyncio.sleep(cfg.get("sleep", 0))
        if self.calls[sid] <= cfg.get("fail_times", 0):
            raise RuntimeError("transient")
        if cfg.get("raise_validation"):
            raise ValidationFailedError("bad input")
        if cfg.get("fail"):
            raise RuntimeError("boom")
        self.log.events.append(f"end:{sid}")
        if cfg.get("return_failed"):
            return {"status": "FAILED", "error": "processor said no"}
        if cfg.get("return_skipped"):
            return {"status": "SKIPPED", "reason": cfg["return_skipped"]}
        return {"status": "COMPLETED", "rows_processed": cfg.get("rows", 0), "seen": sorted(ctx.step_results)}


class FakeRegistry(ProcessorRegistry):
    def __init__(self, engine: Fake, notify_engine: Fake) -> None:
        super().__init__()
        self._cache["test.fake"] = Processor("test.fake", engine, None, "stop")
        self._cache["test.notify"] = Processor("test.notify", notify_engine, None, "continue")


def pipeline(*steps: dict[str, Any], timeout_minutes: float | None = None) -> LoadedPipeline:
    spec = PipelineSpec.model_validate(
        {
            "pipeline_id": "p",
            "timeout_minutes": timeout_minutes,
            "steps": [{"ps_type": "test.fake", **s} for s in steps],
        }
    )
    return LoadedPipeline("t/t/p", "t.yml", spec, {s.step_id: s.config for s in spec.steps})


def make() -> tuple[PipelineExecutor, Fake, Recording]:
    log = Recording()
    fake = Fake(log)
    services = SimpleNamespace(settings=SimpleNamespace(step_retry_backoff_seconds=0.001))
    executor = PipelineExecutor(registry=FakeRegistry(fake, fake), services=services)  # type: ignore[arg-type]
    return executor, fake, log


async def run(executor: PipelineExecutor, p: LoadedPipeline) -> Any:
    info = RunInfo("id", "p", p.path, "acme", "api", record=False)
    return await executor.run(p, info, {}, NullRecorder())


def statuses(result: Any) -> dict[str, str]:
    return {k: v.status for k, v in result.state.steps.items()}


def test_steps_without_dependencies_run_in_file_order() -> None:
    executor, _, log = make()
    p = pipeline({"step_id": "a", "config": {"sleep": 0.02}}, {"step_id": "b"}, {"step_id": "c"})
    result = asyncio.run(run(executor, p))
    assert result.status == "COMPLETED"
    assert log.events == ["start:a", "end:a", "start:b", "end:b", "start:c", "end:c"]
    assert result.state.steps["c"].result["seen"] == ["a", "b"]


def test_parallel_steps_overlap() -> None:
    executor, _, _ = make()
    p = pipeline(
        {"step_id": "a", "config": {"sleep": 0.2}},
        {"step_id": "b", "parallel": True, "config": {"sleep": 0.2}},
    )
    started = time.perf_counter()
    result = asyncio.run(run(executor, p))
    assert result.status == "COMPLETED"
    assert time.perf_counter() - started < 0.35


def test_failure_stops_and_triggers_on_failure_steps() -> None:
    executor, _, _ = make()
    p = pipeline(
        {"step_id": "extract", "config": {"fail": True}},
        {"step_id": "transform"},
        {"step_id": "notify_fail", "trigger": "on_failure", "ps_type": "test.notify"},
        {"step_id": "notify_ok", "trigger": "on_success", "ps_type": "test.notify"},
        {"step_id": "always", "trigger": "always"},
        {"step_id": "done", "trigger": "on_completion"},
    )
    result = asyncio.run(run(executor, p))
    assert result.status == "FAILED"
    assert result.state.failed_step == "extract"
    assert statuses(result) == {
        "extract": "FAILED",
        "transform": "SKIPPED",
        "notify_fail": "COMPLETED",
        "notify_ok": "SKIPPED",
        "always": "COMPLETED",
        "done": "COMPLETED",
    }


def test_processor_returning_failed_is_a_failure() -> None:
    executor, _, _ = make()
    result = asyncio.run(run(executor, pipeline({"step_id": "a", "config": {"return_failed": True}})))
    assert result.status == "FAILED"
    assert result.state.error == "processor said no"


def test_on_failure_continue_does_not_fail_the_run() -> None:
    executor, _, _ = make()
    p = pipeline({"step_id": "a", "on_failure": "continue", "config": {"fail": True}}, {"step_id": "b"})
    result = asyncio.run(run(executor, p))
    assert result.status == "COMPLETED"
    assert statuses(result) == {"a": "FAILED", "b": "COMPLETED"}


def test_notification_failure_defaults_to_continue() -> None:
    executor, _, _ = make()
    p = pipeline({"step_id": "load"}, {"step_id": "notify", "ps_type": "test.notify", "config": {"fail": True}})
    assert asyncio.run(run(executor, p)).status == "COMPLETED"


def test_on_failure_skip_skips_only_dependents() -> None:
    executor, _, _ = make()
    p = pipeline(
        {"step_id": "a", "on_failure": "skip", "config": {"fail": True}},
        {"step_id": "b", "depends_on": ["a"]},
        {"step_id": "c", "parallel": True},
    )
    result = asyncio.run(run(executor, p))
    assert statuses(result) == {"a": "FAILED", "b": "SKIPPED", "c": "COMPLETED"}
    assert result.status == "FAILED"


def test_disabled_step_is_skipped_and_does_not_block() -> None:
    executor, fake, _ = make()
    p = pipeline({"step_id": "a", "enabled": False}, {"step_id": "b"})
    result = asyncio.run(run(executor, p))
    assert statuses(result) == {"a": "SKIPPED", "b": "COMPLETED"}
    assert "a" not in fake.calls


def test_retries_rerun_a_failed_attempt() -> None:
    executor, fake, _ = make()
    result = asyncio.run(run(executor, pipeline({"step_id": "a", "retries": 2, "config": {"fail_times": 2}})))
    assert result.status == "COMPLETED"
    assert fake.calls["a"] == 3
    assert result.state.steps["a"].attempts == 3


def test_retries_are_bounded() -> None:
    executor, fake, _ = make()
    result = asyncio.run(run(executor, pipeline({"step_id": "a", "retries": 1, "config": {"fail_times": 5}})))
    assert result.status == "FAILED"
    assert fake.calls["a"] == 2


def test_validation_errors_are_not_retried() -> None:
    executor, fake, _ = make()
    result = asyncio.run(run(executor, pipeline({"step_id": "a", "retries": 3, "config": {"raise_validation": True}})))
    assert result.status == "FAILED"
    assert fake.calls["a"] == 1


def test_step_timeout_cancels_only_that_run() -> None:
    executor, _, _ = make()
    slow = pipeline({"step_id": "slow", "timeout_minutes": 0.005, "config": {"sleep": 5}})  # 0.3 s
    other = pipeline({"step_id": "other", "config": {"sleep": 0.6}})

    async def both() -> tuple[Any, Any]:
        return await asyncio.gather(run(executor, slow), run(executor, other))

    started = time.perf_counter()
    slow_result, other_result = asyncio.run(both())
    assert slow_result.status == "FAILED"
    assert "timed out" in (slow_result.state.error or "")
    assert other_result.status == "COMPLETED"
    assert time.perf_counter() - started < 2


def test_pipeline_timeout_still_runs_always_steps() -> None:
    executor, _, _ = make()
    p = pipeline(
        {"step_id": "slow", "config": {"sleep": 5}},
        {"step_id": "cleanup", "trigger": "always"},
        timeout_minutes=0.005,
    )
    result = asyncio.run(run(executor, p))
    assert result.status == "FAILED"
    assert statuses(result) == {"slow": "CANCELLED", "cleanup": "COMPLETED"}


def test_rows_processed_adds_up() -> None:
    executor, _, _ = make()
    result = asyncio.run(
        run(executor, pipeline({"step_id": "a", "config": {"rows": 3}}, {"step_id": "b", "config": {"rows": 4}}))
    )
    assert result.state.rows_processed == 7


@pytest.mark.parametrize("bad", ["os.path", "gcp.nope", "Gcp.bq_etl", "gcp..x", "gcp.bq_etl;x", "registry.x"])
def test_registry_refuses_anything_outside_the_processors_package(bad: str) -> None:
    from src.core.pipeline.registry import UnknownProcessorError

    with pytest.raises(UnknownProcessorError):
        ProcessorRegistry().get(bad)


# --- triggers against the outcome so far, processor skips, cancel ---------------------------------


def test_success_runs_on_success_and_on_completion_steps_only() -> None:
    executor, _, _ = make()
    p = pipeline(
        {"step_id": "load"},
        {"step_id": "notify_fail", "trigger": "on_failure", "ps_type": "test.notify"},
        {"step_id": "notify_ok", "trigger": "on_success", "ps_type": "test.notify"},
        {"step_id": "done", "trigger": "on_completion"},
        {"step_id": "always", "trigger": "always"},
    )
    result = asyncio.run(run(executor, p))
    assert result.status == "COMPLETED"
    assert statuses(result) == {
        "load": "COMPLETED",
        "notify_fail": "SKIPPED",
        "notify_ok": "COMPLETED",
        "done": "COMPLETED",
        "always": "COMPLETED",
    }
    assert result.state.steps["notify_fail"].error == "skipped: no earlier step failed"


def test_a_failure_that_continues_does_not_trigger_on_failure_steps() -> None:
    executor, _, _ = make()
    p = pipeline(
        {"step_id": "optional", "on_failure": "continue", "config": {"fail": True}},
        {"step_id": "notify_fail", "trigger": "on_failure", "ps_type": "test.notify"},
        {"step_id": "notify_ok", "trigger": "on_success", "ps_type": "test.notify"},
    )
    result = asyncio.run(run(executor, p))
    assert result.status == "COMPLETED"
    assert statuses(result) == {"optional": "FAILED", "notify_fail": "SKIPPED", "notify_ok": "COMPLETED"}


def test_on_failure_step_sees_the_failure_in_its_context() -> None:
    seen: dict[str, Any] = {}

    class Probe:
        async def execute(self, cfg: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
            failed = next(s for s in ctx.state.steps.values() if s.counts_as_failure)
            seen.update(failed=failed.step_id, error=failed.error, rows=ctx.state.rows_processed)
            return {"status": "COMPLETED"}

    executor, _, _ = make()
    executor._registry._cache["test.probe"] = Processor("test.probe", Probe(), None, "continue")
    p = pipeline(
        {"step_id": "first", "config": {"rows": 5}},
        {"step_id": "load", "config": {"return_failed": True}},
        {"step_id": "notify", "trigger": "on_failure", "ps_type": "test.probe"},
    )
    result = asyncio.run(run(executor, p))
    assert result.status == "FAILED"
    assert seen == {"failed": "load", "error": "processor said no", "rows": 5}


def test_processor_skip_is_recorded_with_its_reason_and_is_not_a_failure() -> None:
    executor, _, _ = make()
    p = pipeline(
        {"step_id": "load", "config": {"rows": 2}},
        {"step_id": "email", "ps_type": "test.notify", "config": {"return_skipped": "SMTP is not configured"}},
        {"step_id": "after"},
    )
    result = asyncio.run(run(executor, p))
    assert result.status == "COMPLETED"
    assert statuses(result) == {"load": "COMPLETED", "email": "SKIPPED", "after": "COMPLETED"}
    email = result.state.steps["email"]
    assert email.error == "SMTP is not configured"
    assert email.counts_as_failure is False
    assert email.result == {"status": "SKIPPED", "reason": "SMTP is not configured"}


class Capture(NullRecorder):
    def __init__(self) -> None:
        self.final: Any = None

    async def run_finished(self, run: RunInfo, state: Any) -> None:
        self.final = state


def test_cancel_still_runs_always_steps() -> None:
    executor, _, log = make()
    p = pipeline(
        {"step_id": "slow", "config": {"sleep": 5}},
        {"step_id": "done", "trigger": "on_completion"},
        {"step_id": "cleanup", "trigger": "always"},
    )
    recorder = Capture()

    async def cancel_midway() -> None:
        info = RunInfo("id", "p", p.path, "acme", "api", record=False)
        task = asyncio.create_task(executor.run(p, info, {}, recorder))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_midway())
    state = recorder.final
    assert state.status == "CANCELLED"
    assert {k: v.status for k, v in state.steps.items()} == {
        "slow": "CANCELLED",
        "done": "SKIPPED",
        "cleanup": "COMPLETED",
    }
    assert "end:cleanup" in log.events
