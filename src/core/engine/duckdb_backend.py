"""The embedded default: one DuckDB file, attached under the project id as catalog name.

Datasets are schemas of that catalog, so ```project.dataset.table``` names work unchanged. SQL
arrives as BigQuery SQL and is translated by ``translate.to_duckdb``. Every connection runs in UTC
(BigQuery's day) with a memory limit. Blocking calls run on a small thread pool; a cancelled caller
interrupts its statement.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import queue
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from src.core.engine.base import (
    Capabilities,
    Params,
    QueryOptions,
    ReplaceResult,
    Row,
    RowsCheck,
    TableOptions,
    TypedParam,
    Warehouse,
)
from src.core.engine.loads import replace_statements
from src.core.engine.schema import Schema, SchemaField
from src.core.engine.sql import TableRef, check_identifier
from src.core.engine.translate import Statement, to_duckdb
from src.core.errors import (
    TerminalWarehouseError,
    TransientWarehouseError,
    WarehouseError,
    WarehouseNotFoundError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# DuckDB's Python binding tries ``import pandas`` whenever it binds parameters; pandas is not a
# dependency, and each failed import searches sys.path (~30 % of a small query's cost). Recording
# its absence once turns those lookups into a dictionary hit.
if importlib.util.find_spec("pandas") is None:
    sys.modules.setdefault("pandas", None)  # type: ignore[arg-type]

CAPABILITIES = Capabilities(
    name="duckdb",
    transactions=True,
    partitioning=False,
    clustering=False,
    merge=True,
    dataset_labels=False,
    single_process=True,
    checks_before_commit=True,
    org_credentials=False,
)

_LINE_RE = re.compile(r"\n\s*LINE \d+:.*", re.DOTALL)
_HINT_RE = re.compile(r"\s*Did you mean .*", re.DOTALL)  # names other tables: never pass it on


def _translate_error(exc: duckdb.Error) -> WarehouseError:
    message = _HINT_RE.sub("", _LINE_RE.sub("", str(exc))).strip()
    if isinstance(exc, duckdb.TransactionException):
        return TransientWarehouseError(f"concurrent update conflict: {message}")
    if isinstance(exc, duckdb.CatalogException) and "does not exist" in message:
        return WarehouseNotFoundError(message)
    return TerminalWarehouseError(message)


def _bind_value(value: Any) -> Any:
    if isinstance(value, TypedParam):
        if value.type.upper() == "JSON" and value.value is not None and not isinstance(value.value, str):
            return json.dumps(value.value, separators=(",", ":"), default=str)
        return value.value
    return value


def _bind(statement: Statement, params: Params | None) -> dict[str, Any]:
    params = params or {}
    missing = statement.parameters - params.keys()
    if missing:
        raise TerminalWarehouseError(f"missing query parameters: {', '.join(sorted(missing))}")
    return {name: _bind_value(params[name]) for name in statement.parameters}


def _rows(cursor: duckdb.DuckDBPyConnection) -> list[Row]:
    if cursor.description is None:
        return []
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


def _run(cursor: duckdb.DuckDBPyConnection, sql: str, params: Params | None) -> tuple[list[Row], int]:
    """Run every statement of ``sql``; return the last one's rows and affected-row count."""
    rows: list[Row] = []
    affected = 0
    for statement in to_duckdb(sql):
        cursor.execute(statement.sql, _bind(statement, params))
        rows = _rows(cursor)
        affected = rows[0]["Count"] if len(rows) == 1 and list(rows[0]) == ["Count"] else 0
    return rows, int(affected or 0)


class DuckDBWarehouse(Warehouse):
    capabilities = CAPABILITIES

    def __init__(self, *, path: Path, project: str, memory_limit: str = "2GB", threads: int = 2) -> None:
        self.project = check_identifier("project", project)
        self._path = path
        self._memory_limit = memory_limit
        self._threads = threads
        self._db: duckdb.DuckDBPyConnection | None = None
        self._pool: queue.SimpleQueue[duckdb.DuckDBPyConnection] = queue.SimpleQueue()
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="duckdb")

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open)

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = duckdb.connect(
                ":memory:",
                config={
                    "memory_limit": self._memory_limit,
                    "threads": self._threads,
                    "temp_directory": str(self._path.with_suffix(".tmp")),
                    "autoinstall_known_extensions": False,
                    "autoload_known_extensions": False,
                },
            )
            escaped = str(self._path).replace("'", "''")
            db.execute(f"ATTACH '{escaped}' AS \"{self.project}\"")
        except duckdb.Error as exc:
            raise TerminalWarehouseError(f"cannot open DuckDB file {self._path}: {exc}") from None
        self._db = db

    async def close(self) -> None:
        db, self._db = self._db, None
        while not self._pool.empty():
            self._pool.get_nowait().close()
        if db is not None:
            db.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- connections -------------------------------------------------------------------------
    def _borrow(self) -> duckdb.DuckDBPyConnection:
        if self._db is None:
            raise TransientWarehouseError("warehouse is not open")
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            cursor = self._db.cursor()
            cursor.execute("SET TimeZone = 'UTC'")
            return cursor

    async def _call(self, fn: Callable[[], T], cursor: duckdb.DuckDBPyConnection) -> T:
        """Run ``fn`` (which uses ``cursor``) on the pool; interrupt it if the caller is cancelled."""

        def guarded() -> T:
            try:
                return fn()
            except duckdb.Error as exc:
                raise _translate_error(exc) from None

        future = asyncio.get_running_loop().run_in_executor(self._executor, guarded)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cursor.interrupt()
            await asyncio.wait([future])  # the statement stops at its next check
            raise

    async def _with_cursor(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        cursor = self._borrow()
        try:
            result = await self._call(lambda: fn(cursor), cursor)
        except BaseException:
            cursor.close()  # state unknown after an error or interrupt: do not reuse
            raise
        self._pool.put(cursor)
        return result

    # --- queries -----------------------------------------------------------------------------
    async def ping(self) -> None:
        await self._with_cursor(lambda c: c.execute("SELECT 1").fetchall())

    async def query(self, sql: str, params: Params | None = None, *, options: QueryOptions | None = None) -> list[Row]:
        self._observe(sql)
        rows, _ = await self._with_cursor(lambda c: _run(c, sql, params))
        return rows

    async def execute(self, sql: str, params: Params | None = None, *, options: QueryOptions | None = None) -> int:
        self._observe(sql)
        _, affected = await self._with_cursor(lambda c: _run(c, sql, params))
        return affected

    async def check_query(self, sql: str, params: Params | None = None) -> None:
        def probe(cursor: duckdb.DuckDBPyConnection) -> None:
            for statement in to_duckdb(sql):
                cursor.execute(f"SELECT * FROM ({statement.sql}) LIMIT 0", _bind(statement, params))

        await self._with_cursor(probe)

    async def replace_rows(
        self,
        destination: TableRef,
        columns: Sequence[str],
        source_query: str,
        *,
        replace_where: str,
        params: Params | None = None,
        options: QueryOptions | None = None,
        check_sql: str | None = None,
        check: RowsCheck | None = None,
    ) -> ReplaceResult:
        delete, insert = replace_statements(destination, columns, source_query, replace_where)
        for sql in (delete, insert, *([check_sql] if check_sql else [])):
            self._observe(sql)

        def replace(cursor: duckdb.DuckDBPyConnection) -> ReplaceResult:
            cursor.execute("BEGIN TRANSACTION")
            try:
                _run(cursor, delete, params)
                _, inserted = _run(cursor, insert, params)
                rows = _run(cursor, check_sql, params)[0] if check_sql else []
                if check is not None and not check(rows):
                    cursor.execute("ROLLBACK")
                    return ReplaceResult(inserted, rows, committed=False)
                cursor.execute("COMMIT")
            except BaseException:
                try:
                    cursor.execute("ROLLBACK")
                except duckdb.Error:
                    pass  # the failed statement already ended the transaction
                raise
            return ReplaceResult(inserted, rows)

        return await self._with_cursor(replace)

    # --- catalog -----------------------------------------------------------------------------
    def _schema_sql(self, dataset: str) -> str:
        return f'"{self.project}"."{check_identifier("dataset", dataset)}"'

    def _table_sql(self, ref: TableRef) -> str:
        return f'"{ref.project}"."{ref.dataset}"."{ref.table}"'

    async def _fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run native DuckDB SQL (catalog queries of this module only)."""
        return await self._with_cursor(lambda c: c.execute(sql, list(args)).fetchall())

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
        await self._fetch(f"CREATE SCHEMA IF NOT EXISTS {self._schema_sql(dataset)}")
        return True

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
        await self._fetch(f"CREATE TABLE IF NOT EXISTS {self._table_sql(ref)} ({columns})")
        return True

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
        escaped = str(path).replace("'", "''")

        def load(cursor: duckdb.DuckDBPyConnection) -> int:
            cursor.execute("BEGIN TRANSACTION")
            try:
                if truncate:
                    cursor.execute(f"DELETE FROM {self._table_sql(ref)}")
                cursor.execute(
                    f"INSERT INTO {self._table_sql(ref)} SELECT * FROM read_json('{escaped}', "
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


def _column_ddl(field: SchemaField) -> str:
    not_null = " NOT NULL" if field.mode == "REQUIRED" else ""
    return f'"{field.name}" {field.duckdb_type()}{not_null}'
