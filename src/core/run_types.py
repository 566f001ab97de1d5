"""The value types of a run that the executor, the repositories, the services and the
notifications share: who runs what (``RunInfo``), how it is going (``RunState``) and how each step
ended (``StepOutcome``). Imports nothing of ours, so every layer can depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

RUN_STATES = ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED")
ACTIVE_RUN_STATES = ("PENDING", "RUNNING")
FINAL_STEP_STATES = frozenset({"COMPLETED", "FAILED", "SKIPPED", "CANCELLED"})


class StepRef(Protocol):
    """What a step log needs to know of a step (a pipeline's ``StepSpec`` is one)."""

    @property
    def step_id(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def ps_type(self) -> str: ...


@dataclass(slots=True)
class JobStats:
    """What the warehouse reported for the jobs of a step or a run (BigQuery: bytes processed and
    billed, slot milliseconds). A figure nobody reported stays None, never a made-up zero (DuckDB
    reports nothing)."""

    jobs: int = 0
    bytes_processed: int | None = None
    bytes_billed: int | None = None
    slot_ms: int | None = None

    def add(self, *, bytes_processed: int | None, bytes_billed: int | None, slot_ms: int | None) -> None:
        """One more job's figures."""
        self.merge(JobStats(1, bytes_processed, bytes_billed, slot_ms))

    def merge(self, other: JobStats) -> None:
        self.jobs += other.jobs
        for name in ("bytes_processed", "bytes_billed", "slot_ms"):
            value = getattr(other, name)
            if value is not None:
                setattr(self, name, (getattr(self, name) or 0) + int(value))


@dataclass(slots=True)
class StepOutcome:
    step_id: str
    status: str  # PENDING, RUNNING, COMPLETED, FAILED, SKIPPED, CANCELLED
    counts_as_failure: bool = False
    error: str | None = None
    rows_processed: int = 0
    attempts: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    result: dict[str, Any] = field(default_factory=dict)
    exception: Exception | None = None  # the error behind ``error``, for synchronous callers
    stats: JobStats = field(default_factory=JobStats)


@dataclass(slots=True)
class RunState:
    """The run's outcome so far; later steps (e.g. notifications) read it."""

    started_at: datetime
    status: str = "RUNNING"
    failed_step: str | None = None
    error: str | None = None
    cancelled: bool = False
    timed_out: bool = False
    steps: dict[str, StepOutcome] = field(default_factory=dict)
    dq_results: list[dict[str, Any]] = field(default_factory=list)  # written with the step logs at the end

    @property
    def failed(self) -> bool:
        return any(s.counts_as_failure for s in self.steps.values())

    @property
    def rows_processed(self) -> int:
        return sum(s.rows_processed for s in self.steps.values())

    @property
    def stats(self) -> JobStats:
        total = JobStats()
        for step in self.steps.values():
            total.merge(step.stats)
        return total

    def duration_ms(self, now: datetime | None = None) -> int:
        return int(((now or datetime.now(UTC)) - self.started_at).total_seconds() * 1000)


@dataclass(frozen=True, slots=True)
class RunInfo:
    pipeline_logging_id: str
    pipeline_id: str
    pipeline_path: str
    org_slug: str | None
    trigger_by: str
    record: bool  # write run and step logs to the central tables
