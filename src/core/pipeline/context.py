"""What a processor sees while it runs: the run, its variables, the outcome so far, the services."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from src.core.engine.base import QueryOptions, TypedParam
from src.core.errors import ValidationFailedError
from src.core.pipeline.models import StepSpec
from src.core.pipeline.ports import StepServices
from src.core.placeholders import PLACEHOLDER_RE
from src.core.run_types import RunInfo, RunState

_SQL_SAFE = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(slots=True)
class StepContext:
    run: RunInfo
    step: StepSpec
    variables: dict[str, Any]
    state: RunState
    services: StepServices

    @property
    def step_results(self) -> dict[str, dict[str, Any]]:
        return {k: v.result for k, v in self.state.steps.items() if v.status == "COMPLETED"}

    @property
    def query_options(self) -> QueryOptions:
        """Tenant query options of this step; the jobs' statistics add up on the step's outcome."""
        outcome = self.state.steps.get(self.step.step_id)
        return QueryOptions(
            org_slug=self.run.org_slug,
            run_id=self.run.pipeline_logging_id,
            stats=outcome.stats if outcome is not None else None,
        )

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
