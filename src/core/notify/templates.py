"""Subject and body templates over a run's variables.

Placeholders are ``{name}`` with a lowercase identifier, as everywhere in ``configs/``: only names
from a known set are substituted (no attribute access, no format specs), so a template can never
reach into Python objects. Unknown names are refused when configs load (``unknown_placeholders``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from src.core.placeholders import BUILTIN_VARIABLES, PLACEHOLDER_RE
from src.core.run_types import RunInfo, RunState

if TYPE_CHECKING:
    from src.core.settings import Settings

# What a notification template may use besides the pipeline's variables.
RUN_VARIABLES = frozenset(
    {
        "status",  # COMPLETED | FAILED | CANCELLED: the run's outcome (so far, inside a run)
        "run_id",  # = pipeline_logging_id
        "run_url",  # {PUBLIC_BASE_URL}/api/v1/pipelines/runs/{pipeline_logging_id}
        "window",  # "2026-11-20" or "2026-11-18..2026-11-20" ("-" without a window)
        "failed_step",
        "error",
        "rows_processed",
        "duration",
        "steps_summary",  # one line per step: "load: COMPLETED (4000 rows)"
        "pipeline_path",
    }
)
# Defaults in configs/notify_systems/*/config.yml apply to every pipeline: built-ins only.
DEFAULTS_VARIABLES = BUILTIN_VARIABLES | RUN_VARIABLES

_MISSING = "-"
_MAX_ERROR = 1000


def unknown_placeholders(texts: Iterable[str | None], known: Iterable[str]) -> list[str]:
    allowed = set(known)
    found = {name for text in texts if text for name in PLACEHOLDER_RE.findall(text)}
    return sorted(found - allowed)


def render(text: str, values: Mapping[str, str]) -> str:
    """Substitute known ``{name}`` placeholders; anything else is left as written."""
    return PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def one_line(text: str, limit: int = 250) -> str:
    """For header fields: no line breaks (no header injection), bounded length."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _text(value: Any) -> str:
    if value is None or value == "":
        return _MISSING
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def outcome_status(state: RunState) -> str:
    """The run's status, or inside a run the outcome of the steps so far."""
    if state.status in {"COMPLETED", "FAILED", "CANCELLED"}:
        return state.status
    if state.cancelled:
        return "CANCELLED"
    return "FAILED" if state.timed_out or state.failed else "COMPLETED"


def first_failure(state: RunState) -> tuple[str | None, str | None]:
    if state.failed_step or state.error:
        return state.failed_step, state.error
    failed = next((s for s in state.steps.values() if s.counts_as_failure), None)
    return (failed.step_id, failed.error) if failed else (None, None)


def _duration(ms: int) -> str:
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s"


def _window(variables: Mapping[str, Any]) -> str:
    start, end = variables.get("start_date"), variables.get("end_date")
    if start is None or end is None:
        return _MISSING
    return _text(start) if start == end else f"{_text(start)}..{_text(end)}"


def _steps_summary(state: RunState) -> str:
    lines = []
    for outcome in state.steps.values():
        detail = f"{outcome.rows_processed} rows" if outcome.status == "COMPLETED" else (outcome.error or "")
        lines.append(f"{outcome.step_id}: {outcome.status}" + (f" ({detail[:200]})" if detail else ""))
    return "\n".join(lines) or _MISSING


def run_values(*, settings: Settings, run: RunInfo, state: RunState, variables: Mapping[str, Any]) -> dict[str, str]:
    """Every value a template may name, as text."""
    values = {name: _text(value) for name, value in variables.items()}
    failed_step, error = first_failure(state)
    base = settings.public_base_url.rstrip("/")
    values.update(
        status=outcome_status(state),
        run_id=run.pipeline_logging_id,
        pipeline_logging_id=run.pipeline_logging_id,
        pipeline_id=run.pipeline_id,
        pipeline_path=run.pipeline_path,
        org_slug=run.org_slug or _MISSING,
        run_url=f"{base}/api/v1/pipelines/runs/{run.pipeline_logging_id}",
        window=_window(variables),
        failed_step=failed_step or _MISSING,
        error=(error or _MISSING)[:_MAX_ERROR],
        rows_processed=str(state.rows_processed),
        duration=_duration(state.duration_ms()),
        steps_summary=_steps_summary(state),
    )
    return values
