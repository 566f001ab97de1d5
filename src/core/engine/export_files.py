"""Export files downloaded from a customer's bucket, read by DuckDB itself (rows never become Python
objects): Parquet, gzip CSV or gzip JSON lines, with the columns of a schema from ``configs/``.

``relation_sql`` is the one reading of a file set: every column of the schema in order, the files'
columns cast to the schema's types, the columns the export does not have as typed NULLs, and maps
(``JSON`` in the schema, e.g. CUR 2.0's ``resource_tags``) as compact JSON text in a string — the
same text whether the file held a Parquet MAP, a CSV cell or a JSON object. The DuckDB warehouse
makes it a view (``stage_files``); the BigQuery warehouse writes it to one Parquet file for a load
job; ``LocalFiles`` runs the config's BigQuery SQL over it (the source totals of a load into
BigQuery, read from the files themselves).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import duckdb

from src.core.engine.base import Params, Row
from src.core.engine.schema import Schema, SchemaField
from src.core.engine.sql import TableRef
from src.core.errors import TerminalWarehouseError

FileFormat = Literal["parquet", "csv", "jsonl"]


@dataclass(frozen=True, slots=True)
class FileSet:
    """Local files of one format; ``columns``: the files' columns to read (lowercase name -> the
    DuckDB type the files have), every other column of the schema reads as NULL."""

    paths: tuple[Path, ...]
    fmt: FileFormat
    columns: Mapping[str, str] = field(default_factory=dict)


def stored_type(f: SchemaField, *, zoned: bool = True) -> str:
    """The DuckDB type a column is staged with: a map (``JSON``) is JSON text in a string; a
    ``TIMESTAMP`` is ``TIMESTAMPTZ``, or with ``zoned=False`` a plain ``TIMESTAMP`` holding UTC."""
    if f.type == "JSON":
        return "VARCHAR"
    if f.type == "TIMESTAMP" and f.mode != "REPEATED" and not zoned:
        return "TIMESTAMP"
    return f.duckdb_type()


def staged_schema(schema: Schema) -> Schema:
    """``schema`` as staged and stored: ``JSON`` (a map) becomes ``STRING`` holding JSON text."""
    return tuple(f.model_copy(update={"type": "STRING"}) if f.type == "JSON" else f for f in schema)


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _reader(files: FileSet) -> str:
    paths = "[" + ", ".join(_literal(p) for p in files.paths) + "]"
    if files.fmt == "parquet":
        # BILLING_PERIOD=YYYY-MM in the keys is no column of the files.
        return f"read_parquet({paths}, hive_partitioning = false, union_by_name = true)"
    if files.fmt == "csv":
        return (
            f"read_csv({paths}, header = true, all_varchar = true, union_by_name = true, "
            "hive_partitioning = false, allow_quoted_nulls = false)"
        )
    return f"read_ndjson_objects({paths}, hive_partitioning = false)"


def _is_nested(duck_type: str) -> bool:
    upper = duck_type.upper()
    return upper.startswith(("MAP", "STRUCT")) or upper.endswith("]")


def _timestamp(value: str, source_type: str, target: str) -> str:
    """``value`` (of ``source_type``) as ``target`` (TIMESTAMPTZ, or TIMESTAMP holding UTC). Text is
    read with its offset ("...Z"), so a plain TIMESTAMP is the UTC time whatever the text said."""
    if source_type == target:
        return value
    if source_type.startswith("TIMESTAMP"):
        return f"CAST({value} AS {target})"  # the session is UTC: a plain TIMESTAMP is UTC
    zoned = f"CAST({value} AS TIMESTAMPTZ)"
    return zoned if target == "TIMESTAMPTZ" else f"CAST({zoned} AS TIMESTAMP)"


def _expression(files: FileSet, f: SchemaField, zoned: bool) -> str:
    name = f.name.lower()
    target = stored_type(f, zoned=zoned)
    if name not in files.columns:
        return f'CAST(NULL AS {target}) AS "{f.name}"'
    if files.fmt == "jsonl":
        column, source_type = f"json_extract_string(json, '$.\"{name}\"')", "VARCHAR"
    else:
        column, source_type = f'"{name}"', files.columns[name].upper()
    if files.fmt == "csv":
        column = f"NULLIF({column}, '')"  # an empty cell is a missing value (as AWS writes NULL)
    if f.type == "JSON":
        if files.fmt == "jsonl":
            value = f"NULLIF(CAST(json_extract(json, '$.\"{name}\"') AS VARCHAR), 'null')"
        elif _is_nested(source_type):
            value = f"CAST(to_json({column}) AS VARCHAR)"
        else:
            value = f"CAST(json(CAST({column} AS VARCHAR)) AS VARCHAR)"
    elif target.startswith("TIMESTAMP"):
        value = _timestamp(column, source_type, target)
    elif files.fmt == "csv" and target == "VARCHAR":
        value = f'"{name}"'  # strings keep their empty values
    else:
        value = column if source_type == target else f"CAST({column} AS {target})"
    return f'{value} AS "{f.name}"'


def relation_sql(files: FileSet, schema: Schema, *, zoned: bool = False) -> str:
    """DuckDB SQL: the files' rows with exactly ``schema``'s columns (see the module docstring).
    Timestamps are plain ``TIMESTAMP`` holding UTC (a UTC session's ``DATE()`` and formatting of them
    need no time-zone library: ~1 s less per 1M rows), or ``TIMESTAMPTZ`` with ``zoned``."""
    if not files.paths:
        columns = ", ".join(f'CAST(NULL AS {stored_type(f, zoned=zoned)}) AS "{f.name}"' for f in schema)
        return f"SELECT {columns} WHERE FALSE"
    return f"SELECT {', '.join(_expression(files, f, zoned) for f in schema)} FROM {_reader(files)}"


def _connect(*, threads: int, memory_limit: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(
        ":memory:",
        config={
            "threads": threads,
            "memory_limit": memory_limit,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        },
    )
    con.execute("SET TimeZone = 'UTC'")
    return con


def describe(paths: Sequence[Path], fmt: FileFormat) -> dict[str, str]:
    """The files' columns (lowercase name -> DuckDB type; every type is VARCHAR for CSV and JSON for
    JSON lines), read from their headers/footers (JSON lines: the keys of every line)."""
    if not paths:
        return {}
    con = _connect(threads=1, memory_limit="512MB")
    try:
        reader = _reader(FileSet(tuple(paths), fmt))
        if fmt == "jsonl":
            rows = con.execute(f"SELECT DISTINCT unnest(json_keys(json)) FROM {reader}").fetchall()
            return {str(r[0]).lower(): "JSON" for r in rows}
        rows = con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()
        return {str(r[0]).lower(): str(r[1]) for r in rows}
    except duckdb.Error as exc:
        raise TerminalWarehouseError(f"cannot read the export files as {fmt}: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()


class LocalFiles:
    """An in-memory DuckDB in which ``ref`` names the files' relation: BigQuery SQL written over
    ``ref`` (the staging table a load fills) reads the files themselves here."""

    def __init__(self, files: FileSet, schema: Schema, ref: TableRef, *, threads: int, memory_limit: str) -> None:
        self._files = files
        self._schema = schema
        self._ref = ref
        self._threads = threads
        self._memory_limit = memory_limit

    def _open(self) -> duckdb.DuckDBPyConnection:
        con = _connect(threads=self._threads, memory_limit=self._memory_limit)
        ref = self._ref
        con.execute(f"ATTACH ':memory:' AS \"{ref.project}\"")
        con.execute(f'CREATE SCHEMA "{ref.project}"."{ref.dataset}"')
        view = f'"{ref.project}"."{ref.dataset}"."{ref.table}"'
        con.execute(f"CREATE VIEW {view} AS {relation_sql(self._files, self._schema)}")
        return con

    async def query(self, sql: str, params: Params | None = None) -> list[Row]:
        from src.core.engine.duckdb_backend import run_statements

        def run() -> list[Row]:
            con = self._open()
            try:
                return run_statements(con, sql, params)[0]
            finally:
                con.close()

        try:
            return await asyncio.to_thread(run)
        except duckdb.Error as exc:
            raise TerminalWarehouseError(f"reading the export files: {str(exc).splitlines()[0]}") from None

    def write_parquet(self, path: Path) -> int:
        """Blocking: the relation into one Parquet file (the schema's column order); its row count."""
        con = _connect(threads=self._threads, memory_limit=self._memory_limit)
        try:
            relation = relation_sql(self._files, self._schema, zoned=True)  # Parquet adjusted to UTC
            con.execute(f"COPY ({relation}) TO {_literal(path)} (FORMAT parquet)")
            (count,) = con.execute(f"SELECT COUNT(*) FROM read_parquet({_literal(path)})").fetchone() or (0,)
            return int(count)
        except duckdb.Error as exc:
            raise TerminalWarehouseError(f"reading the export files: {str(exc).splitlines()[0]}") from None
        finally:
            con.close()
