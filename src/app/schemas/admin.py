"""Bodies of the bootstrap routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool


class BootstrapRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    force_recreate_dataset: StrictBool = Field(
        False, description="Development only: drop and recreate the central dataset (every org's central rows)."
    )
    force_recreate_tables: StrictBool = Field(False, description="Development only: drop and recreate the tables.")


class TableMoved(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    org_slug: str
    from_: str = Field(alias="from", description="The table's old name (dataset.table).")
    to: str


class BootstrapResult(BaseModel):
    dataset: str
    dataset_created: bool
    tables: dict[str, Literal["created", "exists", "recreated"]] = Field(description="What happened to each table.")
    tables_created: list[str]
    tables_existing: list[str]
    columns_added: dict[str, list[str]] = Field(description="Columns added per table (sync).")
    tables_moved: list[TableMoved] | None = Field(
        None, description="Sync only: org tables moved to a new name (a load's destination.renamed_from)."
    )


class BootstrapStatus(BaseModel):
    dataset: str
    dataset_exists: bool
    bootstrapped: bool
    in_sync: bool
    expected_tables: list[str]
    missing_tables: list[str]
    missing_columns: dict[str, list[str]]
