"""Expected figures computed in Python straight from the demo generator: an oracle independent of
the service's SQL."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal
from typing import Any

from src.core.demo.billing_export import iter_rows


def expected_by_day(
    *, end_date: date, days: int, rows_per_day: int, include_late: bool = True
) -> dict[str, dict[str, Any]]:
    totals: dict[str, dict[str, Any]] = defaultdict(lambda: {"rows": 0, "cost": Decimal(0), "credits": Decimal(0)})
    for row in iter_rows(end_date=end_date, days=days, rows_per_day=rows_per_day, seed=42, include_late=include_late):
        day = row["usage_start_time"][:10]
        t = totals[day]
        t["rows"] += 1
        t["cost"] += Decimal(str(row["cost"]))
        t["credits"] += sum((Decimal(str(c["amount"])) for c in row["credits"]), Decimal(0))
    return dict(totals)
