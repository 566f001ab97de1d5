"""The step config of ``aws.s3_data_loader`` and its defaults (``configs/aws/s3_data_loader/config.yml``).

A step names the files' columns (``source.columns_file``, BigQuery schema JSON under ``configs/``:
what an export may contain, in its own names and types; a ``JSON`` column is a map), the columns a
load cannot do without (``source.required_columns``), the query that turns the files' rows into the
destination's (``source.query``, BigQuery SQL over ``{files}``), the destination block of
``gcp.bq_etl`` (plus ``period_column``: with a window of billing periods, the destination rows of
those periods are what a load replaces) and the reconciliation (``reconcile``, over ``{files}``).
Settings left out of a step come from the processor's ``config.yml`` defaults.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from src.core.config_io import read_yaml, validation_to_config_error
from src.core.engine.schema import Schema, load_schema_file
from src.core.errors import ConfigError
from src.core.processors.destination import Destination, WriteMode, check_destination
from src.core.processors.reconcile import Reconcile

PS_TYPE = "aws.s3_data_loader"
TEMPLATES_FILE = Path("aws/s3_data_loader/schema_template.json")
DEFAULTS_FILE = Path("aws/s3_data_loader/config.yml")
_FILES = re.compile(r"\{files\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoaderDefaults(_Strict):
    """``defaults`` of ``configs/aws/s3_data_loader/config.yml``."""

    write_mode: WriteMode
    staging_expiration_hours: float = Field(gt=0, le=168)
    max_files: int = Field(ge=1, le=100_000)


class Source(_Strict):
    manifest: str = Field("cur2", pattern="^cur2$", description="Files: those the period's CUR 2.0 manifest lists.")
    columns_file: str = Field(pattern=r"^[a-z0-9_/]+\.json$")
    required_columns: tuple[str, ...] = ()
    query: str = Field(min_length=1)


class S3Destination(Destination):
    write_mode: WriteMode | None = None  # type: ignore[assignment]  # None: the processor's default
    period_column: str | None = Field(
        None, description="With billing periods: a replace covers the destination rows of those periods."
    )


class Config(_Strict):
    source: Source
    destination: S3Destination
    reconcile: Reconcile | None = None
    staging_expiration_hours: float | None = Field(None, gt=0, le=168)
    max_files: int | None = Field(None, ge=1, le=100_000)

    @model_validator(mode="after")
    def _reads_files(self) -> Config:
        if not _FILES.search(self.source.query):
            raise ValueError("source.query must read {files}")
        if self.reconcile is not None and not _FILES.search(self.reconcile.source_query):
            raise ValueError("reconcile.source_query must read {files}")
        return self


@lru_cache(maxsize=4)
def _raw_defaults(configs_dir: Path) -> dict[str, Any]:
    raw = read_yaml(configs_dir / DEFAULTS_FILE, configs_dir) or {}
    return dict(raw.get("defaults") or {}) if isinstance(raw, dict) else {}


def defaults(configs_dir: Path) -> LoaderDefaults:
    return LoaderDefaults.model_validate(_raw_defaults(configs_dir))


def check_defaults(values: dict[str, Any], configs_dir: Path, file: str) -> None:
    try:
        LoaderDefaults.model_validate(values)
    except ValidationError as exc:
        raise validation_to_config_error(file, exc, "defaults.") from None


@lru_cache(maxsize=8)
def columns_schema(configs_dir: Path, columns_file: str) -> Schema:
    return load_schema_file(configs_dir / columns_file, root=configs_dir)


def check_config(config: Config, configs_dir: Path, file: str, where: str) -> None:
    """Load-time checks that need ``configs/``: template, columns file, required columns, the
    write mode (the step's or the default) and what it needs."""
    dest = config.destination
    check_destination(dest, TEMPLATES_FILE, configs_dir, file, where, extra=(dest.period_column or "",))
    if not (configs_dir / config.source.columns_file).is_file():
        raise ConfigError(file, f"{where}.source.columns_file", f"no file configs/{config.source.columns_file}")
    names = {f.name.lower() for f in columns_schema(configs_dir, config.source.columns_file)}
    unknown = [c for c in config.source.required_columns if c.lower() not in names]
    if unknown:
        raise ConfigError(file, f"{where}.source.required_columns", f"{unknown[0]!r} is not in the columns file")
    mode = dest.write_mode or defaults(configs_dir).write_mode
    if mode == "overwrite_partition" and not dest.partition_column:
        raise ConfigError(file, f"{where}.destination", "write_mode overwrite_partition needs partition_column")
    if mode == "merge" and not dest.merge_keys:
        raise ConfigError(file, f"{where}.destination", "write_mode merge needs merge_keys")
