"""Reads of the org's FOCUS rows: daily sums by FOCUS dimensions, and the rows as a file.

Currency honesty: sums are per ``BillingCurrency``; ``totals`` is given only when the window holds
one currency (``totals_currency`` names it), ``totals_by_currency`` always.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from src.core.engine.exports import ExportFormat
from src.core.engine.repositories.costs import GroupBy
from src.core.engine.repositories.focus import FocusGroupBy
from src.core.engine.sql import TableRef
from src.core.errors import ValidationFailedError
from src.core.processors.focus.build import Destination, focus_schema

if TYPE_CHECKING:
    from src.core.services.container import Services
    from src.core.services.orgs import Provider

FOCUS_MEASURES = ("billed_cost", "effective_cost", "list_cost", "contracted_cost")
MAX_WINDOW_DAYS = 366
MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "jsonl": "application/x-ndjson; charset=utf-8",
}


def check_window(start: date, end: date) -> None:
    if end < start:
        raise ValidationFailedError("end_date is before start_date", code="invalid_parameters")
    if (end - start).days + 1 > MAX_WINDOW_DAYS:
        raise ValidationFailedError(f"the window is longer than {MAX_WINDOW_DAYS} days", code="invalid_parameters")


def totals_per_currency(days: Iterable[dict[str, Any]], measures: Sequence[str]) -> dict[str, Any]:
    """``totals_by_currency`` of the rows; ``totals`` and ``totals_currency`` only with one currency
    (or none: zeros, currency null). Amounts of different currencies are never added together."""
    by_currency: dict[str, dict[str, float]] = {}
    for d in days:
        t = by_currency.setdefault(str(d["currency"]), {"row_count": 0, **dict.fromkeys(measures, 0.0)})
        t["row_count"] += int(d["row_count"])
        for measure in measures:
            t[measure] += float(d[measure] or 0)
    for t in by_currency.values():
        for measure in measures:
            t[measure] = round(t[measure], 6)
    currencies = sorted(by_currency)
    if len(currencies) == 1:
        totals: dict[str, float] | None = by_currency[currencies[0]]
    else:
        totals = {"row_count": 0, **dict.fromkeys(measures, 0.0)} if not currencies else None
    return {
        "currencies": currencies,
        "totals_currency": currencies[0] if len(currencies) == 1 else None,
        "totals": totals,
        "totals_by_currency": by_currency,
    }


def focus_table(services: Services, org_slug: str) -> TableRef:
    return TableRef(services.settings.gcp_project_id, services.settings.org_dataset(org_slug), Destination().table)


async def focus_daily(
    services: Services,
    org_slug: str,
    *,
    start: date,
    end: date,
    group_by: FocusGroupBy | None,
    provider: str = "both",
) -> dict[str, Any]:
    from src.core.services.orgs import get_org

    check_window(start, end)
    await get_org(services, org_slug)
    table = focus_table(services, org_slug)
    days: list[dict[str, Any]] = []
    if await services.warehouse.table_exists(table):
        only = None if provider == "both" else provider
        days = await services.focus.daily(
            table, org_slug=org_slug, start=start, end=end, group_by=group_by, provider=only
        )
    for d in days:
        for measure in FOCUS_MEASURES:
            d[measure] = round(float(d[measure] or 0), 6)
    return {
        "org_slug": org_slug,
        "view": "focus",
        "start_date": start,
        "end_date": end,
        "group_by": group_by,
        "provider": provider,
        "table": str(table),
        "days": days,
        **totals_per_currency(days, FOCUS_MEASURES),
    }


PROVIDER_GROUPS: tuple[GroupBy, ...] = ("service", "project", "sku")
FOCUS_GROUPS: tuple[FocusGroupBy, ...] = ("service_category", "service_name", "provider", "sub_account")


async def daily_view(
    services: Services,
    org_slug: str,
    *,
    view: str,
    start: date,
    end: date,
    group_by: str | None,
    provider: Provider = "both",
) -> dict[str, Any]:
    """``GET .../costs/daily``: the GCP cost table (``view=provider``) or the FOCUS table (``view=focus``)."""
    from src.core.services.orgs import daily_costs

    if view == "focus":
        for group in FOCUS_GROUPS:
            if group_by in (None, group):
                chosen_focus = group if group_by else None
                return await focus_daily(
                    services, org_slug, start=start, end=end, group_by=chosen_focus, provider=provider
                )
        message = f"group_by {group_by!r} is not a grouping of view=focus ({', '.join(FOCUS_GROUPS)})"
    else:
        for pgroup in PROVIDER_GROUPS:
            if group_by in (None, pgroup):
                chosen = pgroup if group_by else None
                return await daily_costs(services, org_slug, start=start, end=end, group_by=chosen, provider=provider)
        message = f"group_by {group_by!r} needs view=focus (view=provider groups by {', '.join(PROVIDER_GROUPS)})"
    raise ValidationFailedError(message, code="invalid_parameters", details={"field": "group_by"})


@dataclass(frozen=True)
class FocusExport:
    filename: str
    media_type: str
    chunks: AsyncIterator[bytes]


async def focus_export(services: Services, org_slug: str, *, start: date, end: date, fmt: ExportFormat) -> FocusExport:
    """The window's FOCUS rows as a file. The warehouse has written the file (or failed: the error
    maps to a status as usual) before this returns; the chunks then only read it back."""
    from src.core.services.orgs import get_org

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
