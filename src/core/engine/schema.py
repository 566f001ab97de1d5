"""Table schemas as BigQuery schema JSON, plus the table options (partitioning, clustering).

Schemas are only ever read from files under ``configs/``. Both backends build tables from these
models: BigQuery maps them to ``SchemaField``; DuckDB maps them with ``duckdb_type``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from src.core.errors import ConfigError

FieldType = Literal[
    "STRING",
    "BYTES",
    "INTEGER",
    "INT64",
    "FLOAT",
    "FLOAT64",
    "NUMERIC",
    "BIGNUMERIC",
    "BOOLEAN",
    "BOOL",
    "DATE",
    "DATETIME",
    "TIME",
    "TIMESTAMP",
    "JSON",
    "GEOGRAPHY",
    "RECORD",
    "STRUCT",
]

_CANONICAL = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN", "STRUCT": "RECORD"}

# BigQuery type -> DuckDB type. NUMERIC keeps BigQuery's precision/scale. DuckDB stops at 38
# digits, so BIGNUMERIC is stored as DECIMAL(38,9) there (documented limitation of the embedded
# backend); GEOGRAPHY is kept as WKT text.
_DUCKDB_SCALAR = {
    "STRING": "VARCHAR",
    "BYTES": "BLOB",
    "INTEGER": "BIGINT",
    "FLOAT": "DOUBLE",
    "NUMERIC": "DECIMAL(38, 9)",
    "BIGNUMERIC": "DECIMAL(38, 9)",
    "BOOLEAN": "BOOLEAN",
    "DATE": "DATE",
    "DATETIME": "TIMESTAMP",
    "TIME": "TIME",
    "TIMESTAMP": "TIMESTAMPTZ",
    "JSON": "JSON",
    "GEOGRAPHY": "VARCHAR",
}

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,299}$"


class SchemaField(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    type: FieldType
    mode: Literal["NULLABLE", "REQUIRED", "REPEATED"] = "NULLABLE"
    description: str | None = None
    fields: tuple[SchemaField, ...] = ()

    @field_validator("type", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("type")
    @classmethod
    def _canonical(cls, value: str) -> str:
        return _CANONICAL.get(value, value)

    def model_post_init(self, __context: object) -> None:
        if self.type == "RECORD" and not self.fields:
            raise ValueError(f"RECORD field {self.name!r} needs nested fields")
        if self.type != "RECORD" and self.fields:
            raise ValueError(f"field {self.name!r} of type {self.type} cannot have nested fields")

    def duckdb_type(self) -> str:
        if self.type == "RECORD":
            inner = ", ".join(f'"{f.name}" {f.duckdb_type()}' for f in self.fields)
            base = f"STRUCT({inner})"
        else:
            base = _DUCKDB_SCALAR[self.type]
        return f"{base}[]" if self.mode == "REPEATED" else base


class TimePartitioning(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["DAY", "HOUR", "MONTH", "YEAR"] = "DAY"
    field: str | None = Field(None, pattern=NAME_PATTERN)
    expiration_days: int | None = Field(None, ge=1)
    require_partition_filter: bool = False


class TableOptions(BaseModel):
    """Partitioning, clustering and metadata of one table (from a ``config.yml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str | None = None
    time_partitioning: TimePartitioning | None = None
    clustering_fields: tuple[str, ...] = Field((), max_length=4)
    labels: dict[str, str] = Field(default_factory=dict)


Schema = tuple[SchemaField, ...]


def parse_schema(raw: object, *, source: str) -> Schema:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(source, "", "a schema is a non-empty JSON list of fields")
    fields: list[SchemaField] = []
    for index, item in enumerate(raw):
        try:
            fields.append(SchemaField.model_validate(item))
        except ValidationError as exc:
            err = exc.errors()[0]
            path = ".".join(str(p) for p in err["loc"])
            raise ConfigError(source, f"[{index}].{path}".rstrip("."), err["msg"]) from None
    names = [f.name.lower() for f in fields]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(source, "", f"duplicate column names: {', '.join(dupes)}")
    return tuple(fields)


def load_schema_file(path: Path, *, root: Path | None = None) -> Schema:
    source = str(path.relative_to(root)) if root else str(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(source, f"line {exc.lineno}", f"invalid JSON: {exc.msg}") from None
    return parse_schema(raw, source=source)


def validate_options(options: TableOptions, schema: Schema, *, source: str) -> None:
    """Partition and cluster columns must exist at the top level with a fitting type."""
    top = {f.name: f for f in schema}
    part = options.time_partitioning
    if part and part.field:
        column = top.get(part.field)
        if column is None:
            raise ConfigError(source, "time_partitioning.field", f"no column {part.field!r} in the schema")
        if column.type not in {"DATE", "TIMESTAMP", "DATETIME"} or column.mode == "REPEATED":
            raise ConfigError(source, "time_partitioning.field", f"{part.field!r} is not a DATE/TIMESTAMP column")
    for name in options.clustering_fields:
        column = top.get(name)
        if column is None:
            raise ConfigError(source, "clustering_fields", f"no column {name!r} in the schema")
        if column.type in {"RECORD", "JSON", "FLOAT", "GEOGRAPHY"} or column.mode == "REPEATED":
            raise ConfigError(source, "clustering_fields", f"{name!r} cannot be a clustering column")
