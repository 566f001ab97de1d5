"""Moving rows between an org table and its earlier incarnation (a renamed table)."""

from __future__ import annotations

from src.core.engine.base import Warehouse
from src.core.engine.sql import TableRef, quote_column


async def copy_missing_days(wh: Warehouse, old: TableRef, new: TableRef, *, day_column: str) -> int:
    """The rows of ``old`` for the days ``new`` has none of, into ``new`` (the columns both have).
    Safe to repeat: a day copied once is no longer missing."""
    new_columns = await wh.table_columns(new)
    old_columns = {c.lower() for c in await wh.table_columns(old)}
    columns = [c for c in new_columns if c.lower() in old_columns]
    cols = ", ".join(quote_column(c) for c in columns)
    day = quote_column(day_column)
    return await wh.execute(
        f"INSERT INTO {new.sql} ({cols}) SELECT {cols} FROM {old.sql} AS o "
        f"WHERE o.{day} NOT IN (SELECT DISTINCT n.{day} FROM {new.sql} AS n WHERE n.{day} IS NOT NULL)"
    )
