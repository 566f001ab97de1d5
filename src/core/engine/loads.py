"""In-warehouse load statements: the rows go from the source query to the destination inside the
warehouse, never through Python. Run the statements of one load in one transaction."""

from __future__ import annotations

from typing import Literal

from src.core.engine.sql import TableRef, quote_column

WriteMode = Literal["append", "overwrite", "overwrite_partition", "merge"]


def load_statements(
    *,
    write_mode: WriteMode,
    destination: TableRef,
    columns: list[str],
    source_query: str,
    partition_column: str | None = None,
    merge_keys: tuple[str, ...] = (),
) -> tuple[list[str], str]:
    """(statements before the write, the write). The write's affected rows are the rows loaded.

    * ``append``: insert the query's rows.
    * ``overwrite``: empty the table, insert.
    * ``overwrite_partition``: delete the window's days (``@start_date``..``@end_date`` on the
      partition column), insert only rows inside the window, so a rerun replaces exactly those days.
    * ``merge``: update rows matching on ``merge_keys``, insert the others.
    """
    cols = ", ".join(quote_column(c) for c in columns)
    src_cols = ", ".join(f"src.{quote_column(c)}" for c in columns)
    source = f"({source_query.strip().rstrip(';')}) AS src"
    if write_mode == "append":
        return [], f"INSERT INTO {destination.sql} ({cols}) SELECT {src_cols} FROM {source}"
    if write_mode == "overwrite":
        return (
            [f"DELETE FROM {destination.sql} WHERE TRUE"],
            f"INSERT INTO {destination.sql} ({cols}) SELECT {src_cols} FROM {source}",
        )
    if write_mode == "overwrite_partition":
        assert partition_column, "overwrite_partition needs a partition column"
        part = quote_column(partition_column)
        return (
            [f"DELETE FROM {destination.sql} WHERE {part} BETWEEN @start_date AND @end_date"],
            f"INSERT INTO {destination.sql} ({cols}) SELECT {src_cols} FROM {source} "
            f"WHERE src.{part} BETWEEN @start_date AND @end_date",
        )
    assert merge_keys, "merge needs merge keys"
    on = " AND ".join(f"t.{quote_column(k)} = src.{quote_column(k)}" for k in merge_keys)
    updates = ", ".join(f"{quote_column(c)} = src.{quote_column(c)}" for c in columns if c not in merge_keys)
    merge = (
        f"MERGE {destination.sql} AS t USING {source} ON {on} "
        + (f"WHEN MATCHED THEN UPDATE SET {updates} " if updates else "")
        + f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({src_cols})"
    )
    return [], merge
