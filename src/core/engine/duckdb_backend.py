"""The embedded default: one DuckDB file, attached under the project id as catalog name.

Datasets are schemas of that catalog, so ```project.dataset.table``` names work unchanged. SQL
arrives as BigQuery SQL and is translated by ``translate.to_duckdb``. Every connection runs in UTC
(BigQuery's day) with a memory limit. Blocking calls run on a small thread pool; a cancelled caller
interrupts its statement.

Mutating DML (UPDATE, DELETE, MERGE) runs one statement at a time per table, as BigQuery's DML
concurrency control has it. That is what makes a guarded statement atomic here too: DuckDB's MVCC
sees two updates of one row as a conflict, but not two inserts of the same key (a MERGE's insert
branch), which BigQuery's serialized DML does. One process opens the file, so per-process order
is the database's order.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import queue
import re
import sys
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from src.core.engine import exports
from src.core.engine.base import (
    Capabilities,
    Estimate,
    Params,
    QueryOptions,
    ReplaceResult,
    Row,
    RowsCheck,
    TypedParam,
    Warehouse,
)
from src.core.engine.duckdb_catalog import EXPIRES_COMMENT, DuckDBCatalog
from src.core.engine.loads import replace_statements
from src.core.engine.schema import Schema
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
    snapshot_in_transaction=True,
    partition_pseudo_columns=False,
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


_MUTATING = re.compile(r"^\s*(?:UPDATE|DELETE\s+FROM|DELETE|MERGE\s+INTO|MERGE)\s+(`[^`]+`|[\w.\-]+)", re.I)


def _mutated_table(sql: str) -> str | None:
    """The table a mutating DML statement (UPDATE, DELETE, MERGE) changes; None for anything else."""
    match = _MUTATING.match(sql)
    return match.group(1) if match else None


def _run(cursor: duckdb.DuckDBPyConnection, sql: str, params: Params | None) -> tuple[list[Row], int]:
    """Run every statement of ``sql``; return the last one's rows and affected-row count."""
    rows: list[Row] = []
    affected = 0
    for statement in to_duckdb(sql):
        cursor.execute(statement.sql, _bind(statement, params))
        rows = _rows(cursor)
        affected = rows[0]["Count"] if len(rows) == 1 and list(rows[0]) == ["Count"] else 0
    return rows, int(affected or 0)


def run_statements(cursor: duckdb.DuckDBPyConnection, sql: str, params: Params | None) -> tuple[list[Row], int]:
    """BigQuery SQL on a DuckDB connection (translated): the last statement's rows and count."""
    return _run(cursor, sql, params)


class DuckDBWarehouse(DuckDBCatalog, Warehouse):
    capabilities = CAPABILITIES

    def __init__(self, *, path: Path, project: str, memory_limit: str = "2GB", threads: int = 2) -> None:
        self.project = check_identifier("project", project)
        self._path = path
        self._memory_limit = memory_limit
        self._threads = threads
        self._db: duckdb.DuckDBPyConnection | None = None
        self._pool: queue.SimpleQueue[duckdb.DuckDBPyConnection] = queue.SimpleQueue()
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="duckdb")
        self._table_locks: dict[str, asyncio.Lock] = {}

    def _dml_lock(self, table: str | None) -> asyncio.Lock | contextlib.nullcontext[None]:
        """The lock mutating DML on ``table`` runs under (see the module docstring)."""
        if table is None:
            return contextlib.nullcontext()
        return self._table_locks.setdefault(table.strip("`").lower(), asyncio.Lock())

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
        async with self._dml_lock(_mutated_table(sql)):
            _, affected = await self._with_cursor(lambda c: _run(c, sql, params))
        return affected

    async def export(
        self,
        sql: str,
        params: Params | None = None,
        *,
        fmt: exports.ExportFormat,
        schema: Schema,
        json_columns: Iterable[str] = (),
        directory: Path | None = None,
        options: QueryOptions | None = None,
    ) -> AsyncGenerator[bytes]:
        """One ``COPY`` of the query to a file (DuckDB streams it under its memory limit), then the
        file in chunks."""
        (statement,) = to_duckdb(sql)
        path = exports.new_file(directory, exports.SUFFIX[fmt])
        copy = exports.copy_sql(statement.sql, path, fmt, schema, json_columns)
        self._observe(sql)
        try:
            await self._with_cursor(lambda c: c.execute(copy, _bind(statement, params)))
            async for chunk in exports.file_chunks(path):
                yield chunk
        finally:
            exports.remove(path)

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
        source_sql: str | None = None,
        check_sql: str | None = None,
        check: RowsCheck | None = None,
    ) -> ReplaceResult:
        delete, insert = replace_statements(destination, columns, source_query, replace_where)
        for sql in (*([source_sql] if source_sql else []), delete, insert, *([check_sql] if check_sql else [])):
            self._observe(sql)

        def replace(cursor: duckdb.DuckDBPyConnection) -> ReplaceResult:
            cursor.execute("BEGIN TRANSACTION")  # one snapshot: every read below sees the same data
            try:
                source = _run(cursor, source_sql, params)[0] if source_sql else []
                _run(cursor, delete, params)
                _, inserted = _run(cursor, insert, params)
                rows = _run(cursor, check_sql, params)[0] if check_sql else []
                if check is not None and not check(source, rows):
                    cursor.execute("ROLLBACK")
                    return ReplaceResult(inserted, rows, committed=False, source_rows=source)
                cursor.execute("COMMIT")
            except BaseException:
                try:
                    cursor.execute("ROLLBACK")
                except duckdb.Error:
                    pass  # the failed statement already ended the transaction
                raise
            return ReplaceResult(inserted, rows, source_rows=source)

        async with self._dml_lock(destination.sql):
            return await self._with_cursor(replace)

    async def estimate(
        self, sql: str, params: Params | None = None, *, options: QueryOptions | None = None
    ) -> Estimate:
        """DuckDB bills nothing: the rows the query would return."""
        rows = await self.query(f"SELECT COUNT(*) AS n FROM ({sql.strip().rstrip(';')}) AS q", params, options=options)
        return Estimate(rows=int(rows[0]["n"]) if rows else 0)

    async def create_table_as(
        self,
        ref: TableRef,
        sql: str,
        params: Params | None = None,
        *,
        options: QueryOptions | None = None,
        expires_at: datetime,
    ) -> int:
        create = f"CREATE OR REPLACE TABLE {ref.sql} AS {sql.strip().rstrip(';')}"
        self._observe(create)
        stamp = expires_at.astimezone(UTC).isoformat()

        def build(cursor: duckdb.DuckDBPyConnection) -> int:
            _run(cursor, create, params)
            cursor.execute(f"COMMENT ON TABLE {self._table_sql(ref)} IS '{EXPIRES_COMMENT}{stamp}'")
            (count,) = cursor.execute(f"SELECT COUNT(*) FROM {self._table_sql(ref)}").fetchone() or (0,)
            return int(count)

        return await self._with_cursor(build)
