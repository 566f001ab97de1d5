"""``{name}`` placeholders in ``configs/`` and the names of the built-in run variables.

Shared by the pipeline loader (which checks every placeholder at load time) and the notification
templates (which render them). Imports nothing of ours.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

PLACEHOLDER_RE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")

# Built-in variables. Neither YAML variables nor request parameters may redefine them; the
# organization and run identity always come from the authenticated request.
PROTECTED_VARIABLES = frozenset(
    {
        "org_slug",
        "org_dataset",
        "project_id",
        "environment",
        "pipeline_id",
        "pipeline_logging_id",
        "trigger_by",
        "central_dataset",
        "dataset_suffix",
        "billing_export_table",
    }
)
WINDOW_VARIABLES = frozenset({"date", "start_date", "end_date"})
# A window of billing periods (months): requested as ``billing_period`` or ``start_period`` +
# ``end_period`` ("YYYY-MM"); the run's variables carry ``start_period``/``end_period``.
PERIOD_VARIABLES = frozenset({"billing_period", "start_period", "end_period"})
BUILTIN_VARIABLES = PROTECTED_VARIABLES | WINDOW_VARIABLES | PERIOD_VARIABLES | {"run_date"}


def placeholders(value: Any) -> Iterator[str]:
    """Every ``{name}`` in a string, or in the strings of a nested dict/list."""
    if isinstance(value, str):
        yield from PLACEHOLDER_RE.findall(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from placeholders(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from placeholders(item)


def sql_placeholders(value: Any, key: str = "") -> Iterator[str]:
    """Placeholders inside SQL texts of a step config (fields named ``query``/``sql`` or ``*_query``)."""
    if isinstance(value, str):
        if key in {"query", "sql"} or key.endswith("_query"):
            yield from PLACEHOLDER_RE.findall(value)
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from sql_placeholders(item, str(name))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from sql_placeholders(item, key)
