"""Cost billing over HTTP on a real DuckDB file: exact, idempotent, isolated."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from src.core.demo.billing_export import is_correction_day
from tests.acceptance.oracle import expected_by_day
from tests.backends import Backend, Seed, start_busy_server
from tests.conftest import DEMO, DEMO_DAYS, DEMO_END, DEMO_ROWS_PER_DAY, unique_slug
from tests.server import REPO, Api, ServerProcess

DAYS = [DEMO_END - timedelta(days=i) for i in range(DEMO_DAYS)][::-1]
EXPECTED = expected_by_day(end_date=DEMO_END, days=DEMO_DAYS, rows_per_day=DEMO_ROWS_PER_DAY)


def money(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.000001"))


def dest_checks(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The after-write reconciliation rows (one per day); the before-write ones check the query's output."""
    return [c for c in run["dq_results"] if c["check_name"] == "reconcile_source"]


def sku_fingerprint(api: Api, slug: str, key: str, day: date) -> list[tuple[Any, ...]]:
    costs = api.costs(slug, key, day.isoformat(), day.isoformat(), group_by="sku")
    return [(d["group_id"], d["row_count"], d["gross_cost"], d["credits"], d["net_cost"]) for d in costs["days"]]


def test_a_day_loads_exactly_and_reruns_change_nothing(api: Api) -> None:
    slug = unique_slug("exact")
    key = api.onboard(slug)
    day = DEMO_END
    fingerprints = []
    for _ in range(3):
        run = api.run_and_wait(slug, key, {"date": day.isoformat()})
        assert run["status"] == "COMPLETED", run["error_message"]
        fingerprints.append(sku_fingerprint(api, slug, key, day))
        (check,) = dest_checks(run)
        assert check["passed"] is True
        assert check["source_rows"] == check["dest_rows"] == EXPECTED[day.isoformat()]["rows"]
    assert fingerprints[0] == fingerprints[1] == fingerprints[2]
    totals = api.costs(slug, key, day.isoformat(), day.isoformat())["totals"]
    want = EXPECTED[day.isoformat()]
    assert totals["row_count"] == want["rows"]
    assert money(totals["gross_cost"]) == money(want["cost"])
    assert money(totals["credits"]) == money(want["credits"])
    assert money(totals["net_cost"]) == money(want["cost"] + want["credits"])


def test_credits_are_netted_per_day(api: Api) -> None:
    slug = unique_slug("net")
    key = api.onboard(slug)
    run = api.run_and_wait(slug, key, {"start_date": DAYS[0].isoformat(), "end_date": DAYS[-1].isoformat()})
    assert run["status"] == "COMPLETED", run["error_message"]
    assert run["steps"][0]["rows_processed"] == sum(e["rows"] for e in EXPECTED.values())
    assert [c["usage_date"] for c in dest_checks(run)] == [d.isoformat() for d in DAYS]
    costs = api.costs(slug, key, DAYS[0].isoformat(), DAYS[-1].isoformat())
    for row in costs["days"]:
        want = EXPECTED[row["usage_date"]]
        assert row["credits"] < 0
        assert money(row["gross_cost"]) == money(want["cost"])
        assert money(row["net_cost"]) == money(want["cost"] + want["credits"])
        assert money(row["net_cost"]) == money(Decimal(str(row["gross_cost"])) + Decimal(str(row["credits"])))


def test_overlapping_backfills_never_duplicate(api: Api) -> None:
    slug = unique_slug("backfill")
    key = api.onboard(slug)
    first, last = DAYS[0].isoformat(), DAYS[-1].isoformat()
    middle = [DAYS[1].isoformat(), DAYS[3].isoformat()]
    for body in (
        {"start_date": first, "end_date": DAYS[3].isoformat()},
        {"start_date": middle[0], "end_date": last},
        {"date": DAYS[2].isoformat()},
        {"start_date": first, "end_date": last},
    ):
        assert api.run_and_wait(slug, key, body)["status"] == "COMPLETED"
    totals = api.costs(slug, key, first, last)["totals"]
    assert totals["row_count"] == sum(e["rows"] for e in EXPECTED.values())
    assert money(totals["gross_cost"]) == money(sum((e["cost"] for e in EXPECTED.values()), Decimal(0)))


def test_group_by_views_add_up(api: Api) -> None:
    slug = unique_slug("groups")
    key = api.onboard(slug)
    assert api.run_and_wait(slug, key, {"date": DEMO_END.isoformat()})["status"] == "COMPLETED"
    day = DEMO_END.isoformat()
    total = api.costs(slug, key, day, day)["totals"]
    for group in ("service", "project", "sku"):
        grouped = api.costs(slug, key, day, day, group_by=group)
        assert len(grouped["days"]) > 1
        assert all(d["group_id"] for d in grouped["days"])
        assert grouped["totals"]["row_count"] == total["row_count"]
        assert money(grouped["totals"]["net_cost"]) == money(total["net_cost"])


def test_another_orgs_key_cannot_run_read_or_see_runs(api: Api) -> None:
    a, b = unique_slug("tenant_a"), unique_slug("tenant_b")
    key_a, key_b = api.onboard(a), api.onboard(b)
    run = api.run_and_wait(a, key_a, {"date": DEMO_END.isoformat()})
    day = DEMO_END.isoformat()
    assert api.run(a, key_b, {"date": day}).status_code == 403
    forbidden = api.http.get(
        f"/api/v1/organizations/{a}/costs/daily",
        headers={"X-API-Key": key_b},
        params={"start_date": day, "end_date": day},
    )
    assert forbidden.status_code == 403
    other = api.http.get(f"/api/v1/pipelines/runs/{run['pipeline_logging_id']}", headers={"X-API-Key": key_b})
    assert other.status_code == 404
    listed = api.http.get("/api/v1/pipelines/runs", headers={"X-API-Key": key_b}).json()
    assert all(r["org_slug"] == b for r in listed["runs"])
    assert api.costs(b, key_b, day, day)["totals"]["row_count"] == 0
    admin_view = api.http.get(f"/api/v1/pipelines/runs/{run['pipeline_logging_id']}", headers=api.admin)
    assert admin_view.status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "date"),
        ({"date": "2026-02-30"}, "date"),
        ({"date": "20261120"}, "date"),
        ({"date": 20261120}, "date"),
        ({"start_date": "2026-11-20", "end_date": "2026-11-19"}, "end_date"),
        ({"start_date": "2026-11-20"}, "end_date"),
        ({"date": "2026-11-20", "start_date": "2026-11-19", "end_date": "2026-11-20"}, None),
        ({"start_date": "2026-01-01", "end_date": "2026-11-20"}, "end_date"),
        ({"date": (date.today() + timedelta(days=3)).isoformat()}, "end_date"),
        ({"date": "2026-11-20", "org_slug": "someone_else"}, "org_slug"),
        ({"date": "2026-11-20", "billing_export_table": "p.d.t"}, "billing_export_table"),
        ({"date": "2026-11-20", "limit": "1; DROP TABLE x"}, "limit"),
    ],
)
def test_bad_parameters_are_422_and_start_nothing(api: Api, body: dict[str, Any], field: str | None) -> None:
    slug = unique_slug("badparams")
    key = api.onboard(slug)
    response = api.run(slug, key, body)
    assert response.status_code == 422, response.text
    payload = response.json()
    assert set(payload) >= {"error", "message", "request_id"}
    if field:
        assert payload.get("field") == field or field in payload["message"]
    runs = api.http.get("/api/v1/pipelines/runs", headers={"X-API-Key": key}).json()
    assert runs["count"] == 0


@pytest.mark.parametrize(
    "path",
    [
        "gcp/cost/nope",
        "setup/bootstrap/pipeline",
        "setup/organizations/onboarding",
        "gcp/bq_etl/config",
        "..%2F..%2Fetc/passwd/x",
        "gcp/cost/cost_billing.yml",
        "GCP/cost/cost_billing",
    ],
)
def test_unknown_or_unrunnable_pipelines_are_404(api: Api, path: str) -> None:
    slug = unique_slug("paths")
    key = api.onboard(slug)
    response = api.http.post(
        f"/api/v1/pipelines/run/{slug}/{path}", headers={"X-API-Key": key}, json={"date": "2026-11-20"}
    )
    assert response.status_code == 404, response.text


def test_runs_are_listed_with_filters(api: Api) -> None:
    slug = unique_slug("listing")
    key = api.onboard(slug)
    done = api.run_and_wait(slug, key, {"date": DAYS[0].isoformat()})
    api.run_and_wait(slug, key, {"date": DAYS[1].isoformat()})
    headers = {"X-API-Key": key}
    listed = api.http.get("/api/v1/pipelines/runs", headers=headers).json()
    assert listed["count"] == 2
    by_date = api.http.get("/api/v1/pipelines/runs", headers=headers, params={"date": DAYS[0].isoformat()}).json()
    assert [r["pipeline_logging_id"] for r in by_date["runs"]] == [done["pipeline_logging_id"]]
    by_status = api.http.get("/api/v1/pipelines/runs", headers=headers, params={"status": "FAILED"}).json()
    assert by_status["count"] == 0
    by_pipeline = api.http.get(
        "/api/v1/pipelines/runs", headers=headers, params={"pipeline": "gcp/cost/cost_billing", "limit": 1}
    ).json()
    assert by_pipeline["count"] == 1
    run = api.http.get(f"/api/v1/pipelines/runs/{done['pipeline_logging_id']}", headers=headers).json()
    assert run["parameters"] == {"start_date": DAYS[0].isoformat(), "end_date": DAYS[0].isoformat()}
    step = next(s for s in run["steps"] if s["step_id"] == "load_billing_costs")
    assert step["status"] == "COMPLETED" and step["started_at"] and step["completed_at"] and step["duration_ms"] >= 0
    assert run["started_at"] and run["completed_at"] and run["trigger_by"] == "api"


def test_admin_runs_on_behalf_of_an_org(api: Api) -> None:
    slug = unique_slug("onbehalf")
    key = api.onboard(slug)
    response = api.http.post(
        f"/api/v1/pipelines/run/{slug}/gcp/cost/cost_billing", headers=api.admin, json={"date": DEMO_END.isoformat()}
    )
    assert response.status_code == 202
    run = api.wait(response.json()["pipeline_logging_id"], key)
    assert run["status"] == "COMPLETED" and run["trigger_by"] == "admin"


# --- dedicated servers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_server(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One big day: runs take long enough to overlap, crash or time out."""
    tmp = tmp_path_factory.mktemp(f"big-{backend.name}")
    srv = start_busy_server(backend, tmp, days=1, duckdb_rows=100_000, emulator_rows=20_000)
    yield srv
    srv.stop()


def test_overlapping_run_is_409_with_the_running_id(big_server: ServerProcess) -> None:
    api = Api(big_server)
    slug = unique_slug("overlap")
    key = api.onboard(slug)
    other_slug = unique_slug("overlap_other")
    other_key = api.onboard(other_slug)
    first = api.run(slug, key, {"date": DEMO_END.isoformat()})
    assert first.status_code == 202
    second = api.run(
        slug, key, {"start_date": (DEMO_END - timedelta(days=2)).isoformat(), "end_date": DEMO_END.isoformat()}
    )
    assert second.status_code == 409, second.text
    assert second.json()["running_pipeline_logging_id"] == first.json()["pipeline_logging_id"]
    other = api.run(other_slug, other_key, {"date": DEMO_END.isoformat()})
    assert other.status_code == 202  # another org runs at the same time
    assert api.wait(first.json()["pipeline_logging_id"], key)["status"] == "COMPLETED"
    assert api.wait(other.json()["pipeline_logging_id"], other_key)["status"] == "COMPLETED"
    assert api.run_and_wait(slug, key, {"date": DEMO_END.isoformat()})["status"] == "COMPLETED"


def test_concurrent_requests_admit_exactly_one(big_server: ServerProcess) -> None:
    api = Api(big_server)
    slug = unique_slug("race")
    key = api.onboard(slug)
    codes: list[int] = []

    def fire() -> None:
        codes.append(Api(big_server).run(slug, key, {"date": DEMO_END.isoformat()}).status_code)

    threads = [threading.Thread(target=fire) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runs = api.http.get("/api/v1/pipelines/runs", headers={"X-API-Key": key}).json()["runs"]
    details = [(r["status"], r["created_at"], r["completed_at"], r["error_message"]) for r in runs]
    assert sorted(codes) == [202] + [409] * 5, details
    assert len(runs) == 1
    api.wait(runs[0]["pipeline_logging_id"], key)


def test_a_crash_leaves_no_run_running(big_server: ServerProcess) -> None:
    api = Api(big_server)
    slug = unique_slug("crash")
    key = api.onboard(slug)
    run_id = api.run(slug, key, {"date": DEMO_END.isoformat()}).json()["pipeline_logging_id"]
    deadline = time.monotonic() + 10
    while api.http.get(f"/api/v1/pipelines/runs/{run_id}", headers={"X-API-Key": key}).json()["status"] == "PENDING":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    big_server.stop(kill=True)
    big_server.start()
    api = Api(big_server)
    deadline = time.monotonic() + 20  # single-process DuckDB recovers at start; BigQuery after the lease
    while (run := api.http.get(f"/api/v1/pipelines/runs/{run_id}", headers={"X-API-Key": key}).json())[
        "status"
    ] == "RUNNING":
        assert time.monotonic() < deadline, "a run of a dead process stayed RUNNING"
        time.sleep(0.2)
    assert run["status"] in {"FAILED", "COMPLETED"}
    if run["status"] == "FAILED":
        assert "owner lost" in run["error_message"]
    again = api.run_and_wait(slug, key, {"date": DEMO_END.isoformat()})
    assert again["status"] == "COMPLETED"
    assert all(c["passed"] for c in dest_checks(again))


def _configs_with_load_step(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of ``configs/`` whose cost_billing load step (its YAML mapping) went through ``edit``."""
    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    pipeline_file = configs / "gcp/cost/cost_billing.yml"
    spec = yaml.safe_load(pipeline_file.read_text())
    edit(spec["steps"][0])
    pipeline_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    return configs


def test_reconciliation_failure_rolls_back_and_fails_the_run(backend: Backend, tmp_path: Path) -> None:
    def lossy(step: dict[str, Any]) -> None:
        source = step["config"]["source"]
        source["query"] = source["query"].rstrip() + "\n  WHERE b.cost_type != 'tax'\n"

    configs = _configs_with_load_step(tmp_path, lossy)
    srv = backend.new_server(tmp_path / "srv", DEMO, CONFIGS_DIR=str(configs))
    try:
        api = Api(srv)
        assert api.bootstrap().status_code == 200
        slug = unique_slug("recon")
        key = api.onboard(slug)
        run = api.run_and_wait(slug, key, {"date": DEMO_END.isoformat()})
        assert run["status"] == "FAILED"
        assert run["failed_step"] == "load_billing_costs"
        (check,) = run["dq_results"]
        if backend.name == "duckdb":  # checks before commit: the write is rolled back
            assert "reconciliation failed before commit (the write was rolled back)" in run["error_message"]
            assert check["check_name"] == "reconcile_source"
        else:  # checks the load's output before writing anything
            assert "reconciliation failed before writing (nothing was written)" in run["error_message"]
            assert check["check_name"] == "reconcile_query_output"
        assert check["passed"] is False
        assert check["dest_rows"] < check["source_rows"] == EXPECTED[DEMO_END.isoformat()]["rows"]
        assert "rows" in check["message"]
        day = DEMO_END.isoformat()
        assert api.costs(slug, key, day, day)["totals"]["row_count"] == 0  # nothing was written
    finally:
        srv.stop()


def test_late_corrections_are_picked_up_by_a_rerun(backend: Backend, tmp_path: Path) -> None:
    correction_day = next(d for d in DAYS if is_correction_day(d, 42))
    before = expected_by_day(end_date=DEMO_END, days=DEMO_DAYS, rows_per_day=DEMO_ROWS_PER_DAY, include_late=False)
    srv = backend.new_server(tmp_path / "srv", Seed(DEMO_END, DEMO_DAYS, DEMO_ROWS_PER_DAY, include_late=False))
    try:
        api = Api(srv)
        assert api.bootstrap().status_code == 200
        slug = unique_slug("late")
        key = api.onboard(slug)
        day = correction_day.isoformat()
        assert api.run_and_wait(slug, key, {"date": day})["status"] == "COMPLETED"
        first = api.costs(slug, key, day, day)["totals"]
        assert first["row_count"] == before[day]["rows"]
        srv.stop()
        backend.seed(srv, DEMO)  # the late export arrives
        srv.start()
        api = Api(srv)
        assert api.run_and_wait(slug, key, {"date": day})["status"] == "COMPLETED"
        second = api.costs(slug, key, day, day)["totals"]
        assert second["row_count"] == EXPECTED[day]["rows"] > first["row_count"]
        assert money(second["gross_cost"]) == money(EXPECTED[day]["cost"])
        assert money(second["net_cost"]) == money(EXPECTED[day]["cost"] + EXPECTED[day]["credits"])
        srv.stop()
        missing, extra, runs = backend.cost_rows_match_source(srv, f"{slug}_local", correction_day)
        assert missing == []
        assert extra == []
        assert runs == 1
    finally:
        srv.stop()


def test_bigquery_tables_get_partitioning_clustering_and_labels(backend: Backend, api: Api) -> None:
    """Read back through the official client what the service created on BigQuery."""
    if backend.name != "bigquery":
        pytest.skip("DuckDB has no partitions, clustering or dataset labels (capabilities say so)")
    slug = unique_slug("bqmeta")
    key = api.onboard(slug)
    assert api.run_and_wait(slug, key, {"date": DEMO_END.isoformat()})["status"] == "COMPLETED"
    project = api.server.env["GCP_PROJECT_ID"]
    client = backend.client(project)  # type: ignore[attr-defined]
    table = client.get_table(f"{project}.{slug}_local.billing_cost_daily")
    assert table.time_partitioning.type_ == "DAY"
    assert table.time_partitioning.field == "usage_date"
    assert table.clustering_fields == ["project_id", "service_id", "sku_id"]
    assert table.labels == {"managed-by": "convergence", "pipeline": "cost_billing"}
    dataset = client.get_dataset(f"{project}.{slug}_local")
    assert dataset.labels["org"] == slug
    assert dataset.labels["managed-by"] == "convergence"
    assert dataset.location == "US"
    runs = client.get_table(f"{project}.organizations.org_meta_pipeline_runs")
    assert runs.time_partitioning.field == "created_at"
    assert runs.clustering_fields == ["org_slug", "status", "pipeline_id"]


def test_warehouse_errors_reach_the_tenant_without_driver_text(backend: Backend, tmp_path: Path) -> None:
    def typo(step: dict[str, Any]) -> None:
        source = step["config"]["source"]
        source["query"] = source["query"].replace("b.seller_name,", "b.seller_nme,")
        step["retries"] = 0

    configs = _configs_with_load_step(tmp_path, typo)
    srv = backend.new_server(tmp_path / "srv", DEMO, CONFIGS_DIR=str(configs))
    try:
        api = Api(srv)
        assert api.bootstrap().status_code == 200
        slug = unique_slug("drivertext")
        key = api.onboard(slug)
        run = api.run_and_wait(slug, key, {"date": DEMO_END.isoformat()})
        assert run["status"] == "FAILED"
        text = str(run)
        for leak in ("Binder", "Catalog", "seller_nme", "SELECT", "Did you mean", "billing_export", "Traceback"):
            assert leak not in text, leak
        assert "details are in the service log" in run["error_message"]
        assert "seller_nme" in srv.log()  # the operator still sees what went wrong
    finally:
        srv.stop()
