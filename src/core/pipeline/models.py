"""Typed models of pipeline YAML. Unknown keys are rejected everywhere."""

from __future__ import annotations

import re
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from src.core.placeholders import BUILTIN_VARIABLES

STEP_ID = r"^[a-z][a-z0-9_]{0,63}$"
PS_TYPE = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){1,3}$"

ParamType = Literal["date", "string", "integer", "number", "boolean"]
Trigger = Literal["on_success", "on_failure", "on_completion", "always"]
OnFailure = Literal["stop", "continue", "skip"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParameterSpec(_Strict):
    type: ParamType
    description: str | None = None
    required: bool = False
    default: str | int | float | bool | date | None = None
    choices: tuple[str | int, ...] | None = None
    pattern: str | None = None
    max_length: int | None = Field(None, ge=1, le=10_000)
    minimum: float | None = None
    maximum: float | None = None


class WindowSpec(_Strict):
    """The run covers a window of UTC days: ``date``, or ``start_date`` + ``end_date`` (inclusive).

    ``unit: month``: a window of whole billing periods (calendar months, UTC): ``billing_period``
    ("YYYY-MM"), or ``start_period`` + ``end_period``; ``date`` / ``start_date`` + ``end_date`` (what
    schedules send) mean the months that contain them. The run's ``start_date``/``end_date`` are the
    first and last day of those months; ``allow_future`` then concerns months (the current one is
    never in the future)."""

    unit: Literal["day", "month"] = "day"
    required: bool = True
    max_days: int | None = Field(None, ge=1, description="Defaults to the MAX_RUN_WINDOW_DAYS setting.")
    allow_future: bool = False


class StepSpec(_Strict):
    step_id: str = Field(pattern=STEP_ID)
    name: str | None = None
    description: str | None = None
    ps_type: str = Field(pattern=PS_TYPE)
    enabled: bool = True
    depends_on: tuple[str, ...] = ()
    parallel: bool = False
    trigger: Trigger = "on_success"
    on_failure: OnFailure | None = None  # None: the processor's default (notifications: continue)
    timeout_minutes: float | None = Field(None, gt=0, le=24 * 60)
    retries: int = Field(0, ge=0, le=10)
    config: dict[str, Any] = Field(default_factory=dict)


class PipelineSpec(_Strict):
    pipeline_id: str = Field(min_length=1, max_length=200)
    name: str | None = None
    description: str | None = None
    version: str | None = None
    org_runnable: bool = False
    window: WindowSpec | None = None
    parameters: dict[str, ParameterSpec] = Field(default_factory=dict)
    variables: dict[str, str | int | float | bool] = Field(default_factory=dict)
    timeout_minutes: float | None = Field(None, gt=0, le=24 * 60)
    steps: tuple[StepSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> PipelineSpec:
        for name in (*self.parameters, *self.variables):
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", name):
                raise ValueError(f"invalid variable or parameter name {name!r}")
        clash = (set(self.parameters) | set(self.variables)) & BUILTIN_VARIABLES
        if clash:
            raise ValueError(f"cannot redefine built-in variables: {', '.join(sorted(clash))}")
        both = set(self.parameters) & set(self.variables)
        if both:
            raise ValueError(f"names are both parameters and variables: {', '.join(sorted(both))}")
        seen: set[str] = set()
        for step in self.steps:
            if step.step_id in seen:
                raise ValueError(f"duplicate step_id {step.step_id!r}")
            unknown = [d for d in step.depends_on if d not in seen]
            if unknown:
                raise ValueError(
                    f"step {step.step_id!r} depends on {', '.join(unknown)}: not an earlier step of this pipeline"
                )
            seen.add(step.step_id)
        return self

    def variable_names(self) -> frozenset[str]:
        return BUILTIN_VARIABLES | set(self.parameters) | set(self.variables)
