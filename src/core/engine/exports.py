"""Query results as files (CSV, Parquet, JSON lines), streamed in chunks with bounded memory.

Both backends end in the same writer, DuckDB's ``COPY ... TO``, so a file looks the same whichever
warehouse produced it: DuckDB copies its query straight to the file; BigQuery's rows arrive page by
page, are appended to a newline-delimited JSON file and copied from there with the types of the
given schema. Text formats write TIMESTAMP columns as ``YYYY-MM-DDTHH:MM:SSZ`` (ISO 8601 in UTC, the
form FOCUS tools read), NUMERIC with its 9 decimals, NULL as an empty CSV field / JSON null; JSON
lines embed the columns named in ``json_columns`` (JSON text) as objects. Parquet keeps the types
(DECIMAL(38, 9), TIMESTAMP WITH TIME ZONE in UTC).

Memory: DuckDB's COPY streams under its ``memory_limit``; pages hold at most ``page_rows`` rows;
files are read back in ``CHUNK_BYTES`` pieces. The file itself is on disk (the export directory)
until the last chunk is sent, then deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from src.core.engine.schema import Schema

ExportFormat = Literal["csv", "parquet", "jsonl"]
SUFFIX: dict[str, str] = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}
CHUNK_BYTES = 1 << 20
_TIMESTAMP_TEXT = "%Y-%m-%dT%H:%M:%SZ"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def copy_sql(relation: str, path: Path, fmt: ExportFormat, schema: Schema, json_columns: Iterable[str] = ()) -> str:
    """DuckDB ``COPY`` of ``relation`` (a DuckDB query or table expression) to ``path``, with the
    columns of ``schema`` in its order, formatted for ``fmt`` (module docstring)."""
    embedded = set(json_columns)
    items = []
    for field in schema:
        column = _quote(field.name)
        if fmt != "parquet" and field.type in ("TIMESTAMP", "DATETIME"):
            items.append(f"strftime({column}, {_literal(_TIMESTAMP_TEXT)}) AS {column}")
        elif fmt == "jsonl" and field.name in embedded:
            items.append(f"CAST({column} AS JSON) AS {column}")
        else:
            items.append(column)
    options = {"csv": "FORMAT csv, HEADER", "parquet": "FORMAT parquet", "jsonl": "FORMAT json"}[fmt]
    return f"COPY (SELECT {', '.join(items)} FROM ({relation}) AS q) TO {_literal(str(path))} ({options})"


def json_reader(path: Path, schema: Schema) -> str:
    """DuckDB ``read_json`` of a newline-delimited JSON file written by :func:`append_ndjson`,
    typed by ``schema``."""
    columns = ", ".join(f"{_literal(f.name)}: {_literal(f.duckdb_type())}" for f in schema)
    return f"SELECT * FROM read_json({_literal(str(path))}, format = 'newline_delimited', columns = {{{columns}}})"


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def append_ndjson(handle: Any, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write rows as JSON lines (NUMERIC as exact text, timestamps as ISO text); the row count."""
    count = 0
    for row in rows:
        handle.write(json.dumps({k: _plain(v) for k, v in row.items()}, separators=(",", ":"), ensure_ascii=False))
        handle.write("\n")
        count += 1
    return count


def new_file(directory: Path | None, suffix: str) -> Path:
    """An empty file of our own (0600) in ``directory`` (the system's temp directory when None)."""
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix="export-", suffix=suffix, dir=directory)
    os.close(handle)
    return Path(name)


def remove(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


async def file_chunks(path: Path, chunk_bytes: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
    """The file's bytes in chunks, read off the event loop."""
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, chunk_bytes):
            yield chunk
    finally:
        handle.close()


def convert_ndjson(source: Path, target: Path, fmt: ExportFormat, schema: Schema, json_columns: Iterable[str]) -> None:
    """Copy a file written by :func:`append_ndjson` to ``target`` as ``fmt`` (blocking), with an
    embedded DuckDB of its own (small memory limit, spilling next to the file)."""
    import duckdb

    con = duckdb.connect(
        ":memory:",
        config={
            "memory_limit": "256MB",
            "threads": 1,
            "temp_directory": str(target.parent / (target.name + ".tmp")),
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        },
    )
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(copy_sql(json_reader(source, schema), target, fmt, schema, json_columns))
    finally:
        con.close()
