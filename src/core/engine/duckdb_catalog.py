"""The catalog side of the DuckDB backend: datasets (schemas of the attached catalog), tables,
columns, NDJSON loads, and table expiry (DuckDB has none: ``create_table_as`` writes the expiry into
the table's comment and ``drop_expired_tables`` honours it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from src.core.engine.export_files import FileSet, relation_sql
from src.core.engine.schema import Schema, SchemaField, TableOptions
from src.core.engine.sql import TableRef, check_identifier
from src.core.errors import TerminalWarehouseError, TransientWarehouseError

T = TypeVar("T")
EXPIRES_COMMENT = "convergence:expires_at="  # table comment that stands for BigQuery's table expiration


class DuckDBCatalog:
    project: str

    async def _with_cursor(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        raise NotImplementedError

    def _schema_sql(self, dataset: str) -> str:
        return f'"{self.project}"."{check_identifier("dataset", dataset)}"'

    def _table_sql(self, ref: TableRef) -> str:
        return f'"{ref.project}"."{ref.dataset}"."{ref.table}"'

    async def _fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run native DuckDB SQL (catalog queries of this module only)."""
        return await self._with_cursor(lambda c: c.execute(sql, list(args)).fetchall())

    async def _create(self, ddl: str) -> bool:
        """``CREATE … IF NOT EXISTS``: True if this call created it. Two creators of one object at
        once meet DuckDB's catalog write-write conflict; the loser's retry finds it there."""
        for attempt in range(5):
            try:
                await self._fetch(ddl)
                return attempt == 0
            except TransientWarehouseError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.02 * 2**attempt)
        return False  # pragma: no cover

    async def dataset_exists(self, dataset: str) -> bool:
        rows = await self._fetch(
            "SELECT 1 FROM information_schema.schemata WHERE catalog_name = ? AND schema_name = ?",
            self.project,
            check_identifier("dataset", dataset),
        )
        return bool(rows)

    async def create_dataset(
        self, dataset: str, *, labels: Mapping[str, str] | None = None, description: str | None = None
    ) -> bool:
        if await self.dataset_exists(dataset):
            return False
        return await self._create(f"CREATE SCHEMA IF NOT EXISTS {self._schema_sql(dataset)}")

    async def delete_dataset(self, dataset: str) -> None:
        await self._fetch(f"DROP SCHEMA IF EXISTS {self._schema_sql(dataset)} CASCADE")

    async def list_tables(self, dataset: str) -> list[str]:
        rows = await self._fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_catalog = ? AND table_schema = ? ORDER BY table_name",
            self.project,
            check_identifier("dataset", dataset),
        )
        return [r[0] for r in rows]

    async def table_exists(self, ref: TableRef) -> bool:
        rows = await self._fetch(
            "SELECT 1 FROM information_schema.tables WHERE table_catalog = ? AND table_schema = ? AND table_name = ?",
            ref.project,
            ref.dataset,
            ref.table,
        )
        return bool(rows)

    async def create_table(self, ref: TableRef, schema: Schema, options: TableOptions | None = None) -> bool:
        if await self.table_exists(ref):
            return False
        columns = ", ".join(_column_ddl(f) for f in schema)
        return await self._create(f"CREATE TABLE IF NOT EXISTS {self._table_sql(ref)} ({columns})")

    async def drop_table(self, ref: TableRef) -> None:
        await self._fetch(f"DROP TABLE IF EXISTS {self._table_sql(ref)}")

    async def dataset_columns(self, dataset: str) -> dict[str, list[str]]:
        rows = await self._fetch(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_catalog = ? AND table_schema = ? ORDER BY table_name, ordinal_position",
            self.project,
            check_identifier("dataset", dataset),
        )
        columns: dict[str, list[str]] = {}
        for table, column in rows:
            columns.setdefault(table, []).append(column)
        return columns

    async def add_columns(self, ref: TableRef, fields: Sequence[SchemaField]) -> None:
        for field in fields:
            if field.mode == "REQUIRED":
                raise TerminalWarehouseError(f"cannot add REQUIRED column {field.name!r} to an existing table")
            await self._fetch(
                f'ALTER TABLE {self._table_sql(ref)} ADD COLUMN IF NOT EXISTS "{field.name}" {field.duckdb_type()}'
            )

    async def load_ndjson(self, ref: TableRef, schema: Schema, path: Path, *, truncate: bool) -> int:
        columns = "{" + ", ".join(f"'{f.name}': '{f.duckdb_type()}'" for f in schema) + "}"
        names = ", ".join(f'"{f.name}"' for f in schema)
        escaped = str(path).replace("'", "''")

        def load(cursor: duckdb.DuckDBPyConnection) -> int:
            cursor.execute("BEGIN TRANSACTION")
            try:
                if truncate:
                    cursor.execute(f"DELETE FROM {self._table_sql(ref)}")
                cursor.execute(
                    f"INSERT INTO {self._table_sql(ref)} ({names}) SELECT * FROM read_json('{escaped}', "
                    f"format = 'newline_delimited', columns = {columns}, timestampformat = '%Y-%m-%dT%H:%M:%S.%fZ')"
                )
                (count,) = cursor.fetchone() or (0,)
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            return int(count)

        return await self._with_cursor(load)

    async def table_options(self, ref: TableRef) -> TableOptions:
        return TableOptions()

    async def stage_files(
        self, ref: TableRef, files: FileSet, schema: Schema, *, expires_at: datetime, options: Any = None
    ) -> int | None:
        """A view over the files (read by DuckDB at each use; no copy), with its expiry in its
        comment like ``create_table_as`` (a run that dies leaves it to ``drop_expired_tables``)."""
        stamp = expires_at.astimezone(UTC).isoformat()
        view = self._table_sql(ref)

        def build(cursor: duckdb.DuckDBPyConnection) -> None:
            cursor.execute(f"CREATE OR REPLACE VIEW {view} AS {relation_sql(files, schema)}")
            cursor.execute(f"COMMENT ON VIEW {view} IS '{EXPIRES_COMMENT}{stamp}'")

        await self._with_cursor(build)
        return None

    async def drop_staged(self, ref: TableRef) -> None:
        await self._fetch(f"DROP VIEW IF EXISTS {self._table_sql(ref)}")

    async def drop_expired_tables(self) -> int:
        """DuckDB has no table expiration: tables made by ``create_table_as`` carry their expiry in
        their comment, and this drops those whose time has come (called by the heartbeat)."""
        rows = await self._fetch(
            "SELECT schema_name, table_name, comment, FALSE FROM duckdb_tables() "
            "WHERE database_name = ? AND comment LIKE ? "
            "UNION ALL SELECT schema_name, view_name, comment, TRUE FROM duckdb_views() "
            "WHERE database_name = ? AND comment LIKE ?",
            self.project,
            f"{EXPIRES_COMMENT}%",
            self.project,
            f"{EXPIRES_COMMENT}%",
        )
        now = datetime.now(UTC)
        dropped = 0
        for schema, table, comment, is_view in rows:
            try:
                expires = datetime.fromisoformat(str(comment).removeprefix(EXPIRES_COMMENT))
            except ValueError:
                continue
            if expires <= now:
                ref = TableRef(self.project, schema, table)
                await (self.drop_staged(ref) if is_view else self.drop_table(ref))
                dropped += 1
        return dropped

    async def rename_table(self, ref: TableRef, new_name: str) -> None:
        await self._fetch(f'ALTER TABLE {self._table_sql(ref)} RENAME TO "{check_identifier("table", new_name)}"')


def _column_ddl(field: SchemaField) -> str:
    not_null = " NOT NULL" if field.mode == "REQUIRED" else ""
    return f'"{field.name}" {field.duckdb_type()}{not_null}'
