"""FOCUS over HTTP: every GCP cost run rebuilds the FOCUS rows of its days (reconciled, idempotent),
``view=focus`` groups them, ``/costs/focus`` streams them as a file, and no endpoint adds currencies."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from tests.acceptance.oracle import expected_by_day
from tests.backends import Backend, BigQueryBackend, DuckDBBackend, Seed
from tests.conftest import DEMO_DAYS, DEMO_END, DEMO_ROWS_PER_DAY, unique_slug
from tests.server import REPO, Api, ServerProcess

DAYS = [DEMO_END - timedelta(days=i) for i in range(DEMO_DAYS)][::-1]
EXPECTED = expected_by_day(end_date=DEMO_END, days=DEMO_DAYS, rows_per_day=DEMO_ROWS_PER_DAY)
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def money(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.000001"))


def daily(api: Api, slug: str, key: str, start: str, end: str, **params: str) -> httpx.Response:
    return api.http.get(
        f"/api/v1/organizations/{slug}/costs/daily",
        headers={"X-API-Key": key},
        params={"start_date": start, "end_date": end, **params},
    )


def focus_view(api: Api, slug: str, key: str, start: str, end: str, **params: str) -> dict[str, Any]:
    response = daily(api, slug, key, start, end, view="focus", **params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def export(api: Api, slug: str, key: str, start: str, end: str, fmt: str | None = None) -> httpx.Response:
    params = {"start_date": start, "end_date": end, **({"format": fmt} if fmt else {})}
    return api.http.get(f"/api/v1/organizations/{slug}/costs/focus", headers={"X-API-Key": key}, params=params)


def rows_of(response: httpx.Response, fmt: str, tmp: Path) -> list[dict[str, Any]]:
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(response.text)))
    if fmt == "jsonl":
        return [json.loads(line) for line in response.text.splitlines() if line]
    path = tmp / "focus.parquet"
    path.write_bytes(response.content)
    con = duckdb.connect()
    try:
        relation = con.execute(f"SELECT * FROM read_parquet('{path}')")
        names = [d[0] for d in relation.description or []]
        return [dict(zip(names, row, strict=True)) for row in relation.fetchall()]
    finally:
        con.close()


def focus_checks(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in run["dq_results"] if c["check_name"] == "reconcile_focus_gcp"]


def test_each_run_rebuilds_the_focus_rows_of_its_days_reconciled_and_idempotent(api: Api) -> None:
    slug = unique_slug("focus_run")
    key = api.onboard(slug)
    window = DAYS[:3]
    run = api.run_and_wait(slug, key, {"start_date": window[0].isoformat(), "end_date": window[-1].isoformat()})
    assert run["status"] == "COMPLETED", run["error_message"]
    steps = {s["step_id"]: s for s in run["steps"]}
    assert steps["build_focus"]["status"] == "COMPLETED"
    assert steps["build_focus"]["rows_processed"] == sum(EXPECTED[d.isoformat()]["rows"] for d in window)
    checks = focus_checks(run)
    assert [c["usage_date"] for c in checks] == [d.isoformat() for d in window]
    for check in checks:
        want = EXPECTED[check["usage_date"]]
        assert check["passed"] is True and check["currency"] == "USD"
        assert check["source_rows"] == check["dest_rows"] == want["rows"]
        assert money(check["dest_cost"]) == money(check["source_cost"]) == money(want["cost"])

    def fingerprint() -> list[tuple[Any, ...]]:
        view = focus_view(api, slug, key, window[0].isoformat(), window[-1].isoformat(), group_by="service_name")
        return [(d["usage_date"], d["group_id"], d["row_count"], d["billed_cost"]) for d in view["days"]]

    before = fingerprint()
    again = api.run_and_wait(slug, key, {"date": window[1].isoformat()})  # a rerun of one day of the window
    assert again["status"] == "COMPLETED", again["error_message"]
    assert [c["usage_date"] for c in focus_checks(again)] == [window[1].isoformat()]
    assert fingerprint() == before
    view = focus_view(api, slug, key, DAYS[0].isoformat(), DAYS[-1].isoformat())
    assert [d["usage_date"] for d in view["days"]] == [d.isoformat() for d in window]  # only the days loaded
    for day in view["days"]:
        want = EXPECTED[day["usage_date"]]
        assert day["row_count"] == want["rows"]
        assert money(day["billed_cost"]) == money(want["cost"])
        assert money(day["effective_cost"]) == money(want["cost"] + want["credits"])
    provider = daily(api, slug, key, DAYS[0].isoformat(), DAYS[-1].isoformat()).json()
    assert money(view["totals"]["billed_cost"]) == money(provider["totals"]["gross_cost"])
    assert money(view["totals"]["effective_cost"]) == money(provider["totals"]["net_cost"])
    assert view["currencies"] == provider["currencies"] == ["USD"]
    assert view["totals_currency"] == provider["totals_currency"] == "USD"


def test_focus_groupings_add_up_and_wrong_groupings_are_422(api: Api) -> None:
    slug = unique_slug("focus_groups")
    key = api.onboard(slug)
    day = DEMO_END.isoformat()
    assert api.run_and_wait(slug, key, {"date": day})["status"] == "COMPLETED"
    total = focus_view(api, slug, key, day, day)["totals"]
    assert total["row_count"] == EXPECTED[day]["rows"]
    for group, expected_ids in (
        ("service_category", {"Compute", "Storage", "Databases", "Networking", "Other"}),
        ("service_name", {"Compute Engine", "Cloud Storage", "BigQuery"}),
        ("provider", {"gcp"}),
        ("sub_account", set()),
    ):
        grouped = focus_view(api, slug, key, day, day, group_by=group)
        ids = {d["group_id"] for d in grouped["days"]}
        assert expected_ids <= ids, (group, ids)
        assert grouped["totals"]["row_count"] == total["row_count"]
        assert money(grouped["totals"]["billed_cost"]) == money(total["billed_cost"])
        assert all(d["currency"] == "USD" for d in grouped["days"])
    providers = focus_view(api, slug, key, day, day, group_by="provider")["days"]
    assert [(d["group_id"], d["group_name"]) for d in providers] == [("gcp", "Google Cloud")]
    for params in ({"view": "focus", "group_by": "sku"}, {"group_by": "service_category"}, {"view": "nope"}):
        bad = daily(api, slug, key, day, day, **params)
        assert bad.status_code == 422, (params, bad.text)
        assert set(bad.json()) >= {"error", "message", "request_id"}


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_focus_export_is_a_named_file_of_the_windows_rows(api: Api, fmt: str, tmp_path: Path) -> None:
    slug = unique_slug(f"focus_{fmt}")
    key = api.onboard(slug)
    window = DAYS[-2:]
    start, end = window[0].isoformat(), window[-1].isoformat()
    assert api.run_and_wait(slug, key, {"start_date": start, "end_date": end})["status"] == "COMPLETED"
    response = export(api, slug, key, start, end, fmt)
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == f'attachment; filename="focus_cost_{slug}_{start}_{end}.{fmt}"'
    rows = rows_of(response, fmt, tmp_path)
    assert len(rows) == sum(EXPECTED[d.isoformat()]["rows"] for d in window)
    billed = sum((Decimal(str(r["BilledCost"])) for r in rows), Decimal(0))
    assert money(billed) == money(sum((EXPECTED[d.isoformat()]["cost"] for d in window), Decimal(0)))
    assert {str(r["x_UsageDate"]) for r in rows} == {start, end}
    assert {r["ProviderName"] for r in rows} == {"Google Cloud"}
    tagged = [r for r in rows if r["Tags"] not in (None, "", "{}")]
    assert tagged
    if fmt == "csv":
        assert all(ISO_UTC.match(r["ChargePeriodStart"]) and ISO_UTC.match(r["BillingPeriodEnd"]) for r in rows)
        assert isinstance(json.loads(tagged[0]["Tags"]), dict)
    elif fmt == "jsonl":
        assert all(ISO_UTC.match(r["ChargePeriodStart"]) for r in rows)
        assert isinstance(tagged[0]["Tags"], dict)  # JSON columns are embedded as objects
    else:
        assert isinstance(rows[0]["BilledCost"], Decimal)
        assert rows[0]["ChargePeriodStart"].tzinfo is not None


def test_focus_export_of_an_org_without_rows_and_bad_requests(api: Api, tmp_path: Path) -> None:
    slug = unique_slug("focus_empty")
    key = api.onboard(slug)
    day = DEMO_END.isoformat()
    empty = export(api, slug, key, day, day)  # csv by default; no FOCUS table yet: the header only
    assert empty.status_code == 200 and empty.headers["content-type"].startswith("text/csv")
    (header,) = empty.text.splitlines()
    assert header.split(",")[:3] == ["x_UsageDate", "x_Provider", "BilledCost"]
    assert rows_of(export(api, slug, key, day, day, "parquet"), "parquet", tmp_path) == []
    other = api.onboard(unique_slug("focus_other"))
    for response, status in (
        (export(api, slug, key, day, day, "xml"), 422),
        (export(api, slug, key, day, DAYS[0].isoformat()), 422),
        (export(api, slug, key, "2020-01-01", day), 422),
        (export(api, slug, other, day, day), 403),
        (api.http.get(f"/api/v1/organizations/{slug}/costs/focus", params={"start_date": day, "end_date": day}), 401),
    ):
        assert response.status_code == status, response.text
        assert set(response.json()) >= {"error", "message", "request_id"}


# --- two currencies -------------------------------------------------------------------------

MIXED_TABLE = "gcp_billing_export_v1_MIXED"
MIXED = Seed(DEMO_END, 2, 200)


def _seed_mixed(backend: Backend, server: ServerProcess) -> str:
    """A second demo export whose Compute Engine rows are billed in EUR; its full name."""
    from src.core.demo.seed import seed_demo_billing

    project = server.env["GCP_PROJECT_ID"]
    if isinstance(backend, DuckDBBackend):
        from src.core.engine.duckdb_backend import DuckDBWarehouse

        warehouse: Any = DuckDBWarehouse(path=Path(server.env["DUCKDB_PATH"]), project=project)
    else:
        assert isinstance(backend, BigQueryBackend)
        warehouse = backend._warehouse(project)

    async def seed() -> None:
        await warehouse.start()
        try:
            await seed_demo_billing(
                warehouse, REPO / "configs", end_date=MIXED.end_date, days=MIXED.days,
                rows_per_day=MIXED.rows_per_day, table=MIXED_TABLE,
            )  # fmt: skip
            table = warehouse.table("billing_export", MIXED_TABLE)
            await warehouse.execute(
                f"UPDATE {table.sql} SET currency = 'EUR' WHERE service.description = 'Compute Engine'"
            )
        finally:
            await warehouse.close()

    asyncio.run(seed())
    return f"{project}.billing_export.{MIXED_TABLE}"


@pytest.fixture(scope="module")
def mixed_server(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    srv = backend.new_server(tmp_path_factory.mktemp(f"mixed-{backend.name}"), None)
    if isinstance(backend, DuckDBBackend):
        srv.stop()  # DuckDB: one process per file
    table = _seed_mixed(backend, srv)
    if isinstance(backend, DuckDBBackend):
        srv.start()
    assert Api(srv).bootstrap().status_code == 200
    yield srv, table
    srv.stop()


def test_no_endpoint_adds_amounts_of_different_currencies(mixed_server: tuple[ServerProcess, str]) -> None:
    srv, table = mixed_server
    api = Api(srv)
    slug = unique_slug("focus_fx")
    key = api.onboard(slug, billing_export_table=table)
    start, end = (MIXED.end_date - timedelta(days=1)).isoformat(), MIXED.end_date.isoformat()
    run = api.run_and_wait(slug, key, {"start_date": start, "end_date": end})
    assert run["status"] == "COMPLETED", run["error_message"]
    checks = focus_checks(run)
    assert sorted((c["usage_date"], c["currency"]) for c in checks) == [
        (day, currency) for day in (start, end) for currency in ("EUR", "USD")
    ]
    assert all(c["passed"] for c in checks)
    provider = daily(api, slug, key, start, end).json()
    for view in (
        provider,
        focus_view(api, slug, key, start, end),
        focus_view(api, slug, key, start, end, group_by="provider"),
    ):
        assert view["currencies"] == ["EUR", "USD"]
        assert view["totals"] is None and view["totals_currency"] is None
        assert set(view["totals_by_currency"]) == {"EUR", "USD"}
        assert all(d["currency"] in ("EUR", "USD") for d in view["days"])
    focus = focus_view(api, slug, key, start, end)
    for currency in ("EUR", "USD"):
        assert money(focus["totals_by_currency"][currency]["billed_cost"]) == money(
            provider["totals_by_currency"][currency]["gross_cost"]
        )
    # The file keeps each row's own currency.
    rows = list(csv.DictReader(io.StringIO(export(api, slug, key, start, end).text)))
    assert {r["BillingCurrency"] for r in rows} == {"EUR", "USD"}
    assert all(r["BillingCurrency"] == "EUR" for r in rows if r["ServiceName"] == "Compute Engine")
