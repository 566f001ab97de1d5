"""BigQuery Standard SQL -> DuckDB SQL, with sqlglot, cached per statement text.

Besides sqlglot's own translation, a small rewrite pass fixes what would be wrong or slow on DuckDB:

* Scalar and EXISTS subqueries over one ``UNNEST(arr)`` (aggregates, filters; arrays of structs or of
  JSON text) become DuckDB list functions, e.g. ``(SELECT SUM(c.f) FROM UNNEST(arr) AS c)`` ->
  ``list_sum(list_transform(arr, c -> c.f))``: the correlated subquery form costs ~5x the time and
  ~8x the memory on DuckDB (``sqlglot_lists``).
* ``PARSE_NUMERIC`` (which DuckDB lacks) becomes a cast to ``DECIMAL(38, 9)``.
* A bare ``NUMERIC`` cast becomes ``DECIMAL(38, 9)`` (BigQuery's NUMERIC), not DuckDB's
  ``DECIMAL(18, 3)`` default, which would silently round money to 3 decimals.

sqlglot itself is imported on the first translation (``sqlglot_passes``), not at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    parameters: frozenset[str]


@lru_cache(maxsize=2048)
def parameter_names(sql: str) -> frozenset[str]:
    """Named ``@parameters`` a BigQuery SQL text references."""
    from src.core.engine import sqlglot_passes

    return sqlglot_passes.parameter_names(sql)


@lru_cache(maxsize=2048)
def to_duckdb(sql: str) -> tuple[Statement, ...]:
    """Translate one BigQuery SQL text (one or more statements)."""
    from src.core.engine import sqlglot_passes

    return tuple(Statement(text, params) for text, params in sqlglot_passes.to_duckdb(sql))


@lru_cache(maxsize=64)
def output_columns(sql: str) -> tuple[str, ...]:
    """Names of the columns a BigQuery SELECT returns, in order."""
    from src.core.engine import sqlglot_passes

    return tuple(sqlglot_passes.output_columns(sql))
