"""``GET .../costs/daily``: an org's costs per UTC day and currency, one page at a time — from the
providers' own cost tables (``view=provider``) or from its FOCUS table (``view=focus``).

Currency honesty: amounts of different currencies are never added. ``totals_by_currency`` always;
``totals`` (and ``totals_currency``, which names it) only when the window holds one currency. The
totals cover the whole window on every page: the warehouse sums them (a bounded number of rows, one
per provider and currency), never Python over pages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from src.core import pagination
from src.core.engine.repositories.costs import GroupBy
from src.core.engine.repositories.focus import FocusGroupBy
from src.core.engine.sql import TableRef
from src.core.errors import ValidationFailedError
from src.core.processors.focus.build import Destination
from src.core.services.orgs import Provider, cost_table, get_org

if TYPE_CHECKING:
    from src.core.services.container import Services

MEASURES = ("gross_cost", "credits", "net_cost")
FOCUS_MEASURES = ("billed_cost", "effective_cost", "list_cost", "contracted_cost")
PROVIDER_GROUPS: tuple[GroupBy, ...] = ("service", "project", "sku")
FOCUS_GROUPS: tuple[FocusGroupBy, ...] = ("service_category", "service_name", "provider", "sub_account")
MAX_WINDOW_DAYS = 366


def focus_table(services: Services, org_slug: str) -> TableRef:
    """The org's FOCUS table (the ``focus.build`` step's destination)."""
    return TableRef(services.settings.gcp_project_id, services.settings.org_dataset(org_slug), Destination().table)


def check_window(start: date, end: date) -> None:
    if end < start:
        raise ValidationFailedError("end_date is before start_date", code="invalid_parameters")
    if (end - start).days + 1 > MAX_WINDOW_DAYS:
        raise ValidationFailedError(f"the window is longer than {MAX_WINDOW_DAYS} days", code="invalid_parameters")


def totals_per_currency(rows: Iterable[Mapping[str, Any]], measures: Sequence[str]) -> dict[str, Any]:
    """``totals_by_currency`` of sum rows (each with ``currency``, ``row_count`` and the measures);
    ``totals`` and ``totals_currency`` only with one currency (or none: zeros, currency null)."""
    by_currency: dict[str, dict[str, float]] = {}
    for row in rows:
        t = by_currency.setdefault(str(row["currency"]), {"row_count": 0, **dict.fromkeys(measures, 0.0)})
        t["row_count"] += int(row["row_count"])
        for measure in measures:
            t[measure] += float(row[measure] or 0)
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


async def daily_view(
    services: Services,
    org_slug: str,
    *,
    view: str,
    start: date,
    end: date,
    group_by: str | None,
    provider: Provider = "both",
    limit: int,
    page_token: str | None = None,
) -> dict[str, Any]:
    """The route: the group is checked against the view before anything is read."""
    if view == "focus":
        for group in FOCUS_GROUPS:
            if group_by in (None, group):
                return await focus_daily(
                    services,
                    org_slug,
                    start=start,
                    end=end,
                    group_by=group if group_by else None,
                    provider=provider,
                    limit=limit,
                    page_token=page_token,
                )
        message = f"group_by {group_by!r} is not a grouping of view=focus ({', '.join(FOCUS_GROUPS)})"
    else:
        for pgroup in PROVIDER_GROUPS:
            if group_by in (None, pgroup):
                return await daily_costs(
                    services,
                    org_slug,
                    start=start,
                    end=end,
                    group_by=pgroup if group_by else None,
                    provider=provider,
                    limit=limit,
                    page_token=page_token,
                )
        message = f"group_by {group_by!r} needs view=focus (view=provider groups by {', '.join(PROVIDER_GROUPS)})"
    raise ValidationFailedError(message, code="invalid_parameters", details={"field": "group_by"})


def _position(page_token: str | None, filters: Mapping[str, Any]) -> int:
    position = pagination.decode(page_token, "costs", filters, 1)
    return pagination.offset(position[0]) if position else 0


async def daily_costs(
    services: Services,
    org_slug: str,
    *,
    start: date,
    end: date,
    group_by: GroupBy | None,
    provider: Provider = "both",
    limit: int,
    page_token: str | None = None,
) -> dict[str, Any]:
    """Gross, credits and net per UTC day, provider and currency from the GCP and/or AWS cost
    tables; totals per currency and per provider."""
    check_window(start, end)
    filters = {"org": org_slug, "view": "provider", "start": start, "end": end, "group_by": group_by, "p": provider}
    offset = _position(page_token, filters)
    await get_org(services, org_slug)
    providers = ("gcp", "aws") if provider == "both" else (provider,)
    tables = {p: cost_table(services, org_slug, p) for p in providers}
    present = {p: t for p, t in tables.items() if await services.warehouse.table_exists(t)}
    days: list[dict[str, Any]] = []
    sums: list[dict[str, Any]] = []
    if present:
        days = await services.costs.daily(
            present, org_slug=org_slug, start=start, end=end, group_by=group_by, limit=limit + 1, offset=offset
        )
        sums = await services.costs.totals(present, org_slug=org_slug, start=start, end=end)
    shown, token = pagination.page(days, limit, "costs", filters, lambda _row: (offset + limit,))
    return {
        "org_slug": org_slug,
        "view": "provider",
        "start_date": start,
        "end_date": end,
        "group_by": group_by,
        "provider": provider,
        "table": str(tables.get("gcp") or tables["aws"]),
        "tables": {p: str(t) for p, t in tables.items()},
        "days": shown,
        "count": len(shown),
        "next_page_token": token,
        **totals_per_currency(sums, MEASURES),
        "totals_by_provider": {
            p: totals_per_currency([s for s in sums if s["provider"] == p], MEASURES)["totals_by_currency"]
            for p in providers
        },
    }


async def focus_daily(
    services: Services,
    org_slug: str,
    *,
    start: date,
    end: date,
    group_by: FocusGroupBy | None,
    provider: Provider = "both",
    limit: int,
    page_token: str | None = None,
) -> dict[str, Any]:
    """BilledCost, EffectiveCost, ListCost and ContractedCost of the FOCUS table per UTC day and
    BillingCurrency (and group); ``provider`` keeps one provider's rows."""
    check_window(start, end)
    filters = {"org": org_slug, "view": "focus", "start": start, "end": end, "group_by": group_by, "p": provider}
    offset = _position(page_token, filters)
    await get_org(services, org_slug)
    table = focus_table(services, org_slug)
    days: list[dict[str, Any]] = []
    sums: list[dict[str, Any]] = []
    if await services.warehouse.table_exists(table):
        only = None if provider == "both" else provider
        days = await services.focus.daily(
            table,
            org_slug=org_slug,
            start=start,
            end=end,
            group_by=group_by,
            provider=only,
            limit=limit + 1,
            offset=offset,
        )
        sums = await services.focus.totals(table, org_slug=org_slug, start=start, end=end, provider=only)
    shown, token = pagination.page(days, limit, "costs", filters, lambda _row: (offset + limit,))
    return {
        "org_slug": org_slug,
        "view": "focus",
        "start_date": start,
        "end_date": end,
        "group_by": group_by,
        "provider": provider,
        "table": str(table),
        "days": shown,
        "count": len(shown),
        "next_page_token": token,
        **totals_per_currency(sums, FOCUS_MEASURES),
    }
