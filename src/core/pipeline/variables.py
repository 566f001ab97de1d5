"""Run variables: built-ins, then the YAML's ``variables``, then the request parameters the pipeline
declares (typed). Anything a pipeline does not declare is refused (422), and no request field can
replace a built-in: the organization always comes from the authenticated key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from src.core.errors import ValidationFailedError
from src.core.pipeline.models import ParameterSpec, PipelineSpec, WindowSpec
from src.core.placeholders import PERIOD_VARIABLES, PLACEHOLDER_RE, WINDOW_VARIABLES

_PERIOD_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


@dataclass(frozen=True, slots=True)
class Window:
    start_date: date
    end_date: date
    unit: str = "day"  # "month": whole billing periods, start_date the 1st of the first, end_date the last day

    @property
    def days(self) -> int:
        return (self.end_date - self.start_date).days + 1

    @property
    def start_period(self) -> str:
        return self.start_date.strftime("%Y-%m")

    @property
    def end_period(self) -> str:
        return self.end_date.strftime("%Y-%m")

    def periods(self) -> list[str]:
        """Every billing period (YYYY-MM) of the window, in order."""
        found, day = [], self.start_date.replace(day=1)
        while day <= self.end_date:
            found.append(day.strftime("%Y-%m"))
            day = _next_month(day)
        return found


def _next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def parse_period(value: Any, field: str) -> date:
    """A billing period ``YYYY-MM`` -> the first day of that month."""
    if not isinstance(value, str) or not _PERIOD_RE.fullmatch(value):
        raise _invalid(f"{field} must be a billing period YYYY-MM", field)
    return date(int(value[:4]), int(value[5:7]), 1)


def _invalid(message: str, field: str | None = None) -> ValidationFailedError:
    return ValidationFailedError(message, code="invalid_parameters", details={"field": field} if field else None)


def parse_date(value: Any, field: str) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise _invalid(f"{field} must be a date YYYY-MM-DD", field)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _invalid(f"{field} is not a real date: {value!r}", field) from None


def _coerce(name: str, spec: ParameterSpec, value: Any) -> Any:
    kind = spec.type
    if kind == "date":
        result: Any = parse_date(value, name)
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise _invalid(f"{name} must be true or false", name)
        result = value
    elif kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(f"{name} must be an integer", name)
        result = value
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid(f"{name} must be a number", name)
        result = float(value)
    else:
        if not isinstance(value, str):
            raise _invalid(f"{name} must be a string", name)
        if spec.max_length and len(value) > spec.max_length:
            raise _invalid(f"{name} is longer than {spec.max_length} characters", name)
        if spec.pattern and not re.fullmatch(spec.pattern, value):
            raise _invalid(f"{name} does not match the required format", name)
        result = value
    if spec.choices is not None and result not in spec.choices:
        raise _invalid(f"{name} must be one of {', '.join(map(str, spec.choices))}", name)
    if spec.minimum is not None and isinstance(result, int | float) and result < spec.minimum:
        raise _invalid(f"{name} must be >= {spec.minimum:g}", name)
    if spec.maximum is not None and isinstance(result, int | float) and result > spec.maximum:
        raise _invalid(f"{name} must be <= {spec.maximum:g}", name)
    return result


def resolve_window(spec: PipelineSpec, params: Mapping[str, Any], *, max_days: int, today: date) -> Window | None:
    window = spec.window
    given = {k for k in WINDOW_VARIABLES if params.get(k) is not None}
    periods = {k for k in PERIOD_VARIABLES if params.get(k) is not None}
    if window is None or (periods and window.unit != "month"):
        if given | periods:
            raise _invalid(
                f"this pipeline takes no {'date' if window is None else 'period'} window "
                f"({', '.join(sorted(given | periods))})"
            )
        return None
    if window.unit == "month":
        return _month_window(window, params, given, periods, max_days=max_days, today=today)
    return _day_window(window, params, given, max_days=max_days, today=today)


def _month_window(
    window: WindowSpec, params: Mapping[str, Any], given: set[str], periods: set[str], *, max_days: int, today: date
) -> Window | None:
    if periods and given:
        raise _invalid("give billing periods or dates, not both", sorted(given)[0])
    if "billing_period" in periods and periods & {"start_period", "end_period"}:
        raise _invalid("give either billing_period, or start_period and end_period, not both", "billing_period")
    if "billing_period" in periods:
        start = end = parse_period(params["billing_period"], "billing_period")
    elif periods == {"start_period", "end_period"}:
        start = parse_period(params["start_period"], "start_period")
        end = parse_period(params["end_period"], "end_period")
        if end < start:
            raise _invalid("end_period is before start_period", "end_period")
    elif periods:
        missing = ({"start_period", "end_period"} - periods).pop()
        raise _invalid(f"{missing} is required with {periods.pop()}", missing)
    elif given:  # days (a schedule's window): the months that contain them
        days = _day_window(window.model_copy(update={"max_days": None}), params, given, max_days=10**6, today=today)
        assert days is not None
        start, end = days.start_date.replace(day=1), days.end_date.replace(day=1)
    elif window.required:
        raise _invalid("billing_period (or start_period and end_period) is required", "billing_period")
    else:
        return None
    result = Window(start, _next_month(end) - timedelta(days=1), unit="month")
    limit = window.max_days or max_days
    if result.days > limit:
        raise _invalid(f"the window spans {result.days} days; the maximum is {limit}", "end_period")
    if not window.allow_future and end > today.replace(day=1):
        raise _invalid(
            f"billing period {result.end_period} is in the future (today is {today.isoformat()} UTC)", "end_period"
        )
    return result


def _day_window(
    window: WindowSpec, params: Mapping[str, Any], given: set[str], *, max_days: int, today: date
) -> Window | None:
    if "date" in given and given & {"start_date", "end_date"}:
        raise _invalid("give either date, or start_date and end_date, not both")
    if "date" in given:
        start = end = parse_date(params["date"], "date")
    elif given == {"start_date", "end_date"}:
        start = parse_date(params["start_date"], "start_date")
        end = parse_date(params["end_date"], "end_date")
        if end < start:
            raise _invalid("end_date is before start_date", "end_date")
    elif given:
        missing = ({"start_date", "end_date"} - given).pop()
        raise _invalid(f"{missing} is required with {given.pop()}", missing)
    elif window.required:
        raise _invalid("date (or start_date and end_date) is required", "date")
    else:
        return None
    limit = window.max_days or max_days
    result = Window(start, end)
    if result.days > limit:
        raise _invalid(f"the window spans {result.days} days; the maximum is {limit}", "end_date")
    if not window.allow_future and end > today:
        raise _invalid(f"{end.isoformat()} is in the future (today is {today.isoformat()} UTC)", "end_date")
    return result


def validate_parameters(spec: PipelineSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """Typed values of the declared parameters (defaults applied); unknown names -> 422."""
    window_keys = set(WINDOW_VARIABLES) if spec.window else set()
    if spec.window is not None and spec.window.unit == "month":
        window_keys |= PERIOD_VARIABLES
    unknown = sorted(set(params) - set(spec.parameters) - window_keys)
    if unknown:
        raise _invalid(f"unknown parameter {unknown[0]!r} for this pipeline", unknown[0])
    values: dict[str, Any] = {}
    for name, pspec in spec.parameters.items():
        if params.get(name) is None:
            if pspec.required:
                raise _invalid(f"{name} is required", name)
            values[name] = pspec.default
        else:
            values[name] = _coerce(name, pspec, params[name])
    return values


def build_variables(
    spec: PipelineSpec,
    *,
    builtins: Mapping[str, Any],
    params: Mapping[str, Any],
    window: Window | None,
) -> tuple[str, dict[str, Any]]:
    """(resolved pipeline_id, variables)."""
    variables: dict[str, Any] = {k: v for k, v in builtins.items() if k != "pipeline_id"}
    now = datetime.now(UTC)
    variables["run_date"] = now.date()
    variables.update(spec.variables)
    variables.update(validate_parameters(spec, params))
    if window is not None:
        variables.update(start_date=window.start_date, end_date=window.end_date, date=window.end_date)
    else:
        variables.update(start_date=None, end_date=None, date=None)
    months = window if window is not None and window.unit == "month" else None
    variables.update(
        start_period=months.start_period if months else None,
        end_period=months.end_period if months else None,
        billing_period=months.start_period if months and months.start_period == months.end_period else None,
    )
    pipeline_id = PLACEHOLDER_RE.sub(lambda m: str(variables.get(m.group(1), "")), spec.pipeline_id)
    variables["pipeline_id"] = pipeline_id
    return pipeline_id, variables
