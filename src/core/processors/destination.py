"""The destination block shared by the load processors (``gcp.bq_etl``, ``aws.s3_data_loader``).

A destination names an org table, the schema template it is created from (a processor's
``schema_template.json`` under ``configs/``), a write mode and the table's options (partitioning,
clustering, labels); columns added to the template later are added to existing tables, and a table
listed in ``renamed_from`` is moved to the new name first (its rows kept).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from src.core.engine.base import Warehouse
from src.core.engine.schema import Schema, TableOptions, parse_schema, validate_options
from src.core.engine.sql import TableRef
from src.core.errors import ConfigError
from src.core.pipeline.context import StepContext

WriteMode = Literal["append", "overwrite", "overwrite_partition", "merge"]


class Destination(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    table: str
    schema_template: str
    write_mode: WriteMode
    partition_column: str | None = None
    merge_keys: tuple[str, ...] = ()
    table_config: TableOptions = TableOptions()
    renamed_from: tuple[str, ...] = Field((), description="Earlier names of the table: moved to this one.")

    @model_validator(mode="after")
    def _mode_needs(self) -> Destination:
        if self.write_mode == "overwrite_partition" and not self.partition_column:
            raise ValueError("write_mode overwrite_partition needs partition_column")
        if self.write_mode == "merge" and not self.merge_keys:
            raise ValueError("write_mode merge needs merge_keys")
        return self


@lru_cache(maxsize=8)
def load_templates(configs_dir: Path, templates_file: Path) -> dict[str, Schema]:
    """Template name -> schema, from ``configs/<templates_file>`` (read once per process)."""
    path = configs_dir / templates_file
    raw = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ConfigError(str(templates_file), "", "expected an object of template name -> schema")
    return {name: parse_schema(fields, source=f"{templates_file}: {name}") for name, fields in raw.items()}


def check_destination(
    dest: Destination, templates_file: Path, configs_dir: Path, file: str, where: str, *, extra: tuple[str, ...] = ()
) -> Schema:
    """Load-time checks of a destination block (its template exists; partition, merge and ``extra``
    columns are in it); returns the template's schema."""
    schema = load_templates(configs_dir, templates_file).get(dest.schema_template)
    if schema is None:
        raise ConfigError(file, f"{where}.destination.schema_template", f"no template {dest.schema_template!r}")
    validate_options(dest.table_config, schema, source=f"{file}: {where}.destination.table_config")
    names = {f.name for f in schema}
    for column in (dest.partition_column, *dest.merge_keys, *extra):
        if column and column not in names:
            raise ConfigError(
                file, f"{where}.destination", f"column {column!r} is not in template {dest.schema_template!r}"
            )
    return schema


def destination_ref(context: StepContext, wh: Warehouse, dest: Destination) -> TableRef:
    return TableRef(wh.project, context.render_sql(dest.dataset), context.render_sql(dest.table))


async def ensure_table(context: StepContext, ref: TableRef, schema: Schema, dest: Destination) -> None:
    """The org dataset and the table exist, with the template's columns and the rendered options."""
    wh = context.services.warehouse
    options = dest.table_config.model_copy(
        update={"labels": {k: context.render(v) for k, v in dest.table_config.labels.items()}}
    )
    await wh.create_dataset(ref.dataset, labels={"org": context.run.org_slug or "", "managed-by": "convergence"})
    for old_name in dest.renamed_from:
        old = TableRef(ref.project, ref.dataset, old_name)
        await context.services.move_renamed_table(old, ref, day_column=dest.partition_column)
    if await wh.create_table(ref, schema, options):
        return
    present = {c.lower() for c in await wh.table_columns(ref)}
    missing = [f for f in schema if f.name.lower() not in present and f.mode != "REQUIRED"]
    if missing:
        await wh.add_columns(ref, missing)
