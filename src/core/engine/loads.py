"""In-warehouse load statements: rows go from the source query to the destination inside the
warehouse, never through Python. Write modes:

* ``append``: insert the query's rows.
* ``overwrite``: replace the whole table, atomically (``replace_rows`` with condition TRUE).
* ``overwrite_partition``: replace exactly the window's days, atomically; only rows inside the
  window are inserted, so a rerun gives the same table.
* ``merge``: update rows matching on the merge keys, insert the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from src.core.engine.sql import TableRef, quote_column

WriteMode = Literal["append", "overwrite", "overwrite_partition", "merge"]


def replace_statements(
    destination: TableRef, columns: Sequence[str], source_query: str, replace_where: str
) -> tuple[str, str]:
    """DELETE + INSERT for one transaction (backends with cheap multi-statement transactions)."""
    cols = ", ".join(quote_column(c) for c in columns)
    src_cols = ", ".join(f"src.{quote_column(c)}" for c in columns)
    return (
        f"DELETE FROM {destination.sql} WHERE {replace_where.replace('{t}.', '')}",
        f"INSERT INTO {destination.sql} ({cols}) SELECT {src_cols} FROM ({_strip(source_query)}) AS src "
        f"WHERE {_qualify(replace_where, 'src')}",
    )


def replace_merge_sql(destination: TableRef, columns: Sequence[str], source_query: str, replace_where: str) -> str:
    """The same replace as one MERGE statement (BigQuery's atomic partition overwrite)."""
    cols = ", ".join(quote_column(c) for c in columns)
    src_cols = ", ".join(f"src.{quote_column(c)}" for c in columns)
    return (
        f"MERGE {destination.sql} AS t USING (SELECT * FROM ({_strip(source_query)}) AS src "
        f"WHERE {_qualify(replace_where, 'src')}) AS src ON FALSE "
        f"WHEN NOT MATCHED BY SOURCE AND {_qualify(replace_where, 't')} THEN DELETE "
        f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({src_cols})"
    )


def _strip(query: str) -> str:
    return query.strip().rstrip(";")


def _qualify(condition: str, alias: str) -> str:
    """``{t}.`` placeholders in a replace condition name the table alias."""
    return condition.replace("{t}", alias)


def window_condition(partition_column: str, low: str = "start_date", high: str = "end_date") -> str:
    """``{t}.column BETWEEN @low AND @high`` (by default the run's window of days)."""
    return f"{{t}}.{quote_column(partition_column)} BETWEEN @{low} AND @{high}"


def append_sql(destination: TableRef, columns: Sequence[str], source_query: str) -> str:
    cols = ", ".join(quote_column(c) for c in columns)
    src_cols = ", ".join(f"src.{quote_column(c)}" for c in columns)
    return f"INSERT INTO {destination.sql} ({cols}) SELECT {src_cols} FROM ({_strip(source_query)}) AS src"


def merge_sql(destination: TableRef, columns: Sequence[str], source_query: str, keys: Sequence[str]) -> str:
    """Update rows matching on ``keys``, insert the others."""
    cols = ", ".join(quote_column(c) for c in columns)
    src_cols = ", ".join(f"src.{quote_column(c)}" for c in columns)
    on = " AND ".join(f"t.{quote_column(k)} = src.{quote_column(k)}" for k in keys)
    updates = ", ".join(f"{quote_column(c)} = src.{quote_column(c)}" for c in columns if c not in keys)
    return (
        f"MERGE {destination.sql} AS t USING ({_strip(source_query)}) AS src ON {on} "
        + (f"WHEN MATCHED THEN UPDATE SET {updates} " if updates else "")
        + f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({src_cols})"
    )


def measures_sql(
    relation: str,
    *,
    date_column: str,
    cost_column: str,
    credits_column: str | None = None,
    currency_column: str | None = None,
    where: str = "",
) -> str:
    """Per day (and currency, when named): row_count, cost, credits (0 without a credits column) of
    ``relation`` (a table reference or a parenthesized query)."""
    d, c = quote_column(date_column), quote_column(cost_column)
    credits = f"SUM(r.{quote_column(credits_column)})" if credits_column else "0"
    currency = f"r.{quote_column(currency_column)}" if currency_column else "CAST(NULL AS STRING)"
    group = f"r.{d}" + (f", {currency}" if currency_column else "")
    return (
        f"SELECT r.{d} AS usage_date, {currency} AS currency, COUNT(*) AS row_count, SUM(r.{c}) AS cost, "
        f"{credits} AS credits FROM {relation} AS r {where} GROUP BY {group}"
    )
