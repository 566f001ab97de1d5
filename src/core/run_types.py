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

    @property
    def failed(self) -> bool:
        return any(s.counts_as_failure for s in self.steps.values())

    @property
    def rows_processed(self) -> int:
        return sum(s.rows_processed for s in self.steps.values())

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
