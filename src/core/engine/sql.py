"""Identifiers: the only things ever pasted into SQL text, and only after these checks.

Values are always bound as query parameters. Project, dataset and table names cannot be bound, so
they are validated against strict patterns and quoted here, in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from src.core.errors import ValidationFailedError

PROJECT_RE = re.compile(r"^[a-z][a-z0-9\-]{4,61}[a-z0-9]$")
DATASET_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
COLUMN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")


def check_identifier(kind: str, value: str) -> str:
    pattern = {"project": PROJECT_RE, "dataset": DATASET_RE, "table": TABLE_RE, "column": COLUMN_RE}[kind]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValidationFailedError(f"invalid {kind} name: {value!r}", code="invalid_identifier")
    return value


@dataclass(frozen=True, slots=True)
class TableRef:
    project: str
    dataset: str
    table: str

    def __post_init__(self) -> None:
        check_identifier("project", self.project)
        check_identifier("dataset", self.dataset)
        check_identifier("table", self.table)

    @classmethod
    def parse(cls, text: str, *, default_project: str | None = None) -> TableRef:
        """``project.dataset.table`` (or ``dataset.table`` with a default project)."""
        parts = text.strip().strip("`").split(".")
        if len(parts) == 2 and default_project:
            parts = [default_project, *parts]
        if len(parts) != 3:
            raise ValidationFailedError(
                f"table must be 'project.dataset.table', got {text!r}", code="invalid_identifier"
            )
        return cls(*parts)

    @property
    def sql(self) -> str:
        """BigQuery-quoted reference: ```project.dataset.table```."""
        return f"`{self.project}.{self.dataset}.{self.table}`"

    def __str__(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"


def quote_column(name: str) -> str:
    return f"`{check_identifier('column', name)}`"
