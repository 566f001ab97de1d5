"""What a processor sees while it runs: the run, its variables, the outcome so far, the services."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from src.core.engine.base import QueryOptions, TypedParam
from src.core.errors import ValidationFailedError
from src.core.pipeline.models import PLACEHOLDER_RE, StepSpec

if TYPE_CHECKING:
    from src.core.services.container import Services

_SQL_SAFE = re.compile(r"^[A-Za-z0-9_.\-]+$")

FINAL_STEP_STATES = frozenset({"COMPLETED", "FAILED", "SKIPPED", "CANCELLED"})


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
    exception: Exception | None = None  # the ServiceError behind ``error``, for synchronous callers


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


@dataclass(slots=True)
class StepContext:
    run: RunInfo
    step: StepSpec
    variables: dict[str, Any]
    state: RunState
    services: Services

    @property
    def step_results(self) -> dict[str, dict[str, Any]]:
        return {k: v.result for k, v in self.state.steps.items() if v.status == "COMPLETED"}

    @property
    def query_options(self) -> QueryOptions:
        return QueryOptions(org_slug=self.run.org_slug, run_id=self.run.pipeline_logging_id)

    def render(self, text: str) -> str:
        """Replace ``{name}`` placeholders with variable values."""
        return PLACEHOLDER_RE.sub(lambda m: str(self._value(m.group(1))), text)

    def render_sql(self, text: str) -> str:
        """Like ``render`` but only identifier-safe values may enter SQL text (values are bound)."""

        def sub(match: re.Match[str]) -> str:
            value = str(self._value(match.group(1)))
            if not _SQL_SAFE.fullmatch(value):
                raise ValidationFailedError(
                    f"variable {match.group(1)!r} cannot be used in SQL text; bind it as @param"
                )
            return value

        return PLACEHOLDER_RE.sub(sub, text)

    def _value(self, name: str) -> Any:
        if name not in self.variables:
            raise ValidationFailedError(f"unknown variable {{{name}}} in step {self.step.step_id!r}")
        value = self.variables[name]
        if value is None:
            raise ValidationFailedError(f"variable {{{name}}} has no value for this run")
        return value

    def query_params(self) -> dict[str, Any]:
        """Every variable as a typed query parameter (only those a statement names are sent)."""
        params: dict[str, Any] = {}
        for name, value in self.variables.items():
            if isinstance(value, bool):
                params[name] = TypedParam("BOOL", value)
            elif isinstance(value, date) and not isinstance(value, datetime):
                params[name] = TypedParam("DATE", value)
            elif isinstance(value, datetime):
                params[name] = TypedParam("TIMESTAMP", value)
            elif isinstance(value, int):
                params[name] = TypedParam("INT64", value)
            elif isinstance(value, float):
                params[name] = TypedParam("FLOAT64", value)
            else:
                params[name] = TypedParam("STRING", None if value is None else str(value))
        return params
