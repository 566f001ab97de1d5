"""The org's FOCUS rows as a file (``GET .../costs/focus``); their daily sums are in
``services/cost_reads.py``."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from src.core.engine.exports import ExportFormat
from src.core.processors.focus.build import focus_schema
from src.core.services.cost_reads import check_window, focus_table
from src.core.services.orgs import get_org

if TYPE_CHECKING:
    from src.core.services.container import Services

MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "jsonl": "application/x-ndjson; charset=utf-8",
}


@dataclass(frozen=True)
class FocusExport:
    filename: str
    media_type: str
    chunks: AsyncIterator[bytes]


async def focus_export(services: Services, org_slug: str, *, start: date, end: date, fmt: ExportFormat) -> FocusExport:
    """The window's FOCUS rows as a file. The warehouse has written the file (or failed: the error
    maps to a status as usual) before this returns; the chunks then only read it back."""
    check_window(start, end)
    await get_org(services, org_slug)
    table = focus_table(services, org_slug)
    exists = await services.warehouse.table_exists(table)
    chunks = services.focus.export(
        table if exists else None,
        focus_schema(services.settings.configs_dir),
        org_slug=org_slug,
        start=start,
        end=end,
        fmt=fmt,
        directory=services.settings.export_dir,
    )
    try:
        first = await anext(chunks, b"")
    except BaseException:
        await chunks.aclose()
        raise
    return FocusExport(
        filename=f"focus_cost_{org_slug}_{start.isoformat()}_{end.isoformat()}.{fmt}",
        media_type=MEDIA_TYPES[fmt],
        chunks=_prepend(first, chunks),
    )


async def _prepend(first: bytes, rest: AsyncGenerator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()
