"""Shape checks of a customer's billing export table, generated from the export's schema JSON."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from src.core.engine.base import Warehouse
from src.core.engine.schema import Schema, SchemaField, load_schema_file
from src.core.engine.sql import TableRef
from src.core.errors import TerminalWarehouseError

EXPORT_SCHEMA_FILE = Path("gcp/cost/billing_export_schema.json")


@lru_cache(maxsize=4)
def export_schema(configs_dir: Path) -> Schema:
    """Google's standard usage cost export schema (``configs/gcp/cost/billing_export_schema.json``)."""
    return load_schema_file(configs_dir / EXPORT_SCHEMA_FILE, root=configs_dir)


INGESTION_DAY = SchemaField(name="_PARTITIONTIME", type="TIMESTAMP", description="Ingestion day (demo data).")


async def add_ingestion_day(wh: Warehouse, ref: TableRef) -> None:
    """Where the warehouse has no ``_PARTITIONTIME`` pseudo-column (DuckDB), a table that stands
    for Google's ingestion-time partitioned export gets a real one: the UTC day each row was
    exported, so the partition filter of the config SQL means the same thing on both backends."""
    if wh.capabilities.partition_pseudo_columns:
        return
    await wh.add_columns(ref, [INGESTION_DAY])
    await wh.execute(
        f"UPDATE {ref.sql} SET _PARTITIONTIME = TIMESTAMP_TRUNC(export_time, DAY) WHERE _PARTITIONTIME IS NULL"
    )


def _select_expr(field: SchemaField, path: str, depth: int) -> str:
    """An expression that only binds if ``field`` (and all its nested fields) exist at ``path``."""
    if field.type != "RECORD":
        return path
    if field.mode == "REPEATED":
        alias = f"x{depth}"
        inner = ", ".join(_select_expr(f, f"{alias}.{f.name}", depth + 1) for f in field.fields)
        return f"ARRAY(SELECT AS STRUCT {inner} FROM UNNEST({path}) AS {alias})"
    return (
        "STRUCT(" + ", ".join(f"{_select_expr(f, f'{path}.{f.name}', depth)} AS {f.name}" for f in field.fields) + ")"
    )


def shape_probe_sql(table: TableRef, schema: Schema) -> str:
    columns = ", ".join(f"{_select_expr(f, f'b.{f.name}', 0)} AS {f.name}" for f in schema)
    return f"SELECT {columns} FROM {table.sql} AS b WHERE FALSE"


class BillingExportRepository:
    def __init__(self, warehouse: Warehouse) -> None:
        self._wh = warehouse

    def _expected(self, schema: Schema) -> Schema:
        """The export's columns, plus the ingestion day where it is a real column (DuckDB)."""
        return schema if self._wh.capabilities.partition_pseudo_columns else (*schema, INGESTION_DAY)

    async def check_shape(self, table: TableRef, schema: Schema) -> None:
        """Raises a WarehouseError if a column or nested field of ``schema`` is missing."""
        await self._wh.check_query(shape_probe_sql(table, self._expected(schema)))

    async def misfit_columns(self, table: TableRef, schema: Schema) -> list[str]:
        """Top-level columns that are missing or lack a nested field (one probe per column)."""
        misfits = []
        for field in self._expected(schema):
            try:
                await self._wh.check_query(shape_probe_sql(table, (field,)))
            except TerminalWarehouseError:
                misfits.append(field.name)
        return misfits
