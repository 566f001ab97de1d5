"""What a cost run reads, and what that costs: one read of the export's window (partition-bounded)
into a snapshot every later read uses, the bytes recorded per step and run and shown per month, dry
runs that start nothing, and the table's new name with the rows of an org onboarded before."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml

from src.core.demo.billing_export import export_table_name, iter_rows
from tests.backends import Backend, BigQueryBackend
from tests.conftest import DEMO, DEMO_END, unique_slug
from tests.server import ADMIN_KEY, REPO, Api

ADMIN = {"X-Admin-Key": ADMIN_KEY}
DAY = DEMO_END.isoformat()


def _rows_of_day(day: str) -> int:
    return sum(1 for r in iter_rows(end_date=DEMO.end_date, days=DEMO.days, rows_per_day=DEMO.rows_per_day, seed=42)
               if r["usage_start_time"][:10] == day)  # fmt: skip


def test_each_run_reads_the_export_once_with_a_partition_bound(backend: Backend, api: Api) -> None:
    if not isinstance(backend, BigQueryBackend):
        pytest.skip("reads are counted by the BigQuery-limits proxy; DuckDB bills no reads")
    slug = unique_slug("onescan")
    key = api.onboard(slug)
    run = api.run_and_wait(slug, key, {"start_date": (DEMO_END.replace(day=DEMO_END.day - 2)).isoformat(),
                                       "end_date": DAY})  # fmt: skip
    assert run["status"] == "COMPLETED", run["error_message"]
    statements = backend.proxy.stats(run_id=run["pipeline_logging_id"])["statements"]
    export = f"{api.server.env['GCP_PROJECT_ID']}.billing_export.{export_table_name()}"
    reading = [s for s in statements if export in s["reads"]]
    assert len(reading) == 1, [(s["kind"], s["table"]) for s in reading]  # the snapshot, once
    (snapshot,) = reading
    assert snapshot["kind"] == "DDL" and "_snapshot_" in snapshot["table"]
    assert "_PARTITIONTIME >= TIMESTAMP(DATE_SUB(@start_date, INTERVAL 1 DAY))" in snapshot["sql"]
    assert "expiration_timestamp" in snapshot["sql"]
    later = [s for s in statements if s["seq"] > snapshot["seq"] and s["kind"] in {"SELECT", "MERGE"}]
    assert later and all(snapshot["table"] in s["reads"] or f"{slug}_local" in str(s["reads"]) for s in later)


def test_rows_appended_after_the_snapshot_neither_fail_nor_enter_the_run(backend: Backend, api: Api) -> None:
    if not isinstance(backend, BigQueryBackend):
        pytest.skip("DuckDB's snapshot is the write's own transaction (tests/unit/test_cost_snapshot.py)")
    slug = unique_slug("midrun")
    key = api.onboard(slug)
    project = api.server.env["GCP_PROJECT_ID"]
    export = f"{project}.billing_export.{export_table_name()}"
    before = api.costs(slug, key, DAY, DAY)["totals"]["row_count"]
    assert before == 0
    backend.proxy.configure(latency=0.4)
    try:
        response = api.run(slug, key, {"date": DAY})
        assert response.status_code == 202, response.text
        run_id = response.json()["pipeline_logging_id"]
        deadline = time.monotonic() + 60
        while True:  # the snapshot is taken: append a late row of the same day to the export
            done = [s for s in backend.proxy.stats(run_id=run_id)["statements"]
                    if s["kind"] == "DDL" and s["finished_at"]]  # fmt: skip
            if done:
                break
            assert time.monotonic() < deadline, "the snapshot was never taken"
            time.sleep(0.05)
        client = backend.client(project)
        client.query(
            f"INSERT INTO `{export}` (billing_account_id, usage_start_time, usage_end_time, cost, currency, "
            f"cost_type, export_time) VALUES ('late', TIMESTAMP '{DAY} 12:00:00', TIMESTAMP '{DAY} 13:00:00', "
            f"1.5, 'USD', 'regular', CURRENT_TIMESTAMP())"
        ).result()
        appended_at = time.time()
        run = api.wait(run_id, key)
    finally:
        backend.proxy.configure(latency=0.0)
    try:
        assert run["status"] == "COMPLETED", run["error_message"]
        assert appended_at < max(s["finished_at"] for s in backend.proxy.stats(run_id=run_id)["statements"])
        assert all(c["passed"] for c in run["dq_results"])
        expected = _rows_of_day(DAY)
        assert api.costs(slug, key, DAY, DAY)["totals"]["row_count"] == expected  # not the late row
        again = api.run_and_wait(slug, key, {"date": DAY})
        assert again["status"] == "COMPLETED"
        assert api.costs(slug, key, DAY, DAY)["totals"]["row_count"] == expected + 1  # the next run has it
    finally:  # the demo export is the session server's, shared with later tests: take the row out again
        client.query(f"DELETE FROM `{export}` WHERE billing_account_id = 'late'").result()


def test_a_failed_run_leaves_no_staging_table(backend: Backend, tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    pipeline_file = configs / "gcp/cost/cost_billing.yml"
    spec = yaml.safe_load(pipeline_file.read_text())
    step = spec["steps"][0]
    step["config"]["source"]["query"] = step["config"]["source"]["query"].replace("b.seller_name,", "b.seller_nme,")
    step["retries"] = 0
    pipeline_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    srv = backend.new_server(tmp_path / "srv", DEMO, CONFIGS_DIR=str(configs))
    try:
        api = Api(srv)
        assert api.bootstrap().status_code == 200
        slug = unique_slug("nostage")
        key = api.onboard(slug)
        run = api.run_and_wait(slug, key, {"date": DAY})
        assert run["status"] == "FAILED"
        if isinstance(backend, BigQueryBackend):
            project = srv.env["GCP_PROJECT_ID"]
            tables = [t.table_id for t in backend.client(project).list_tables(f"{project}.{slug}_local")]
            assert not [t for t in tables if t.startswith("_snapshot_")], tables
            created = [s for s in backend.proxy.stats(run_id=run["pipeline_logging_id"])["statements"]
                       if s["kind"] == "DDL"]  # fmt: skip
            assert created, "the snapshot was taken before the failing read"
    finally:
        srv.stop()


def test_runs_record_what_they_cost_and_usage_sums_the_month(backend: Backend, api: Api) -> None:
    slug = unique_slug("bytes")
    key = api.onboard(slug)
    run = api.run_and_wait(slug, key, {"date": DAY})
    assert run["status"] == "COMPLETED"
    load = next(s for s in run["steps"] if s["step_id"] == "load_billing_costs")
    usage = api.http.get(f"/api/v1/organizations/{slug}/usage", headers={"X-API-Key": key}).json()["warehouse"]
    assert usage["runs"] == 1
    assert usage["price_per_tib_usd"] == 6.25
    if isinstance(backend, BigQueryBackend):
        # The emulator reports bytes processed (always 0) but no bytes billed or slot time; the
        # arithmetic on real figures is tested offline (tests/unit/test_bigquery_offline.py).
        assert isinstance(load["bytes_processed"], int)
        assert isinstance(run["bytes_processed"], int)
        assert run["bytes_processed"] >= load["bytes_processed"]
    else:  # DuckDB bills and reports nothing: null, never a made-up zero
        for field in ("bytes_processed", "bytes_billed", "slot_ms"):
            assert load[field] is None and run[field] is None, field
        assert usage["bytes_billed"] is None and usage["estimated_cost_usd"] is None


def test_dry_run_estimates_and_starts_nothing(backend: Backend, api: Api) -> None:
    slug = unique_slug("dryrun")
    key = api.onboard(slug)
    usage_before = api.http.get(f"/api/v1/organizations/{slug}/usage", headers={"X-API-Key": key}).json()
    response = api.run(slug, key, {"date": DAY, "dry_run": True})
    assert response.status_code == 200, response.text
    estimate = response.json()
    assert estimate["dry_run"] is True
    assert estimate["start_date"] == estimate["end_date"] == DAY
    statement, focus = estimate["statements"]
    assert statement["step_id"] == "load_billing_costs"
    # The FOCUS rebuild reads the org's cost table, which this new org does not have yet.
    assert focus["step_id"] == "build_focus" and focus["rows"] is None and focus["bytes_processed"] is None
    if isinstance(backend, BigQueryBackend):
        assert isinstance(statement["bytes_processed"], int) and statement["rows"] is None
        assert estimate["total_bytes_processed"] == statement["bytes_processed"]
        assert estimate["estimated_cost_usd"] is not None
    else:
        assert statement["rows"] == _rows_of_day(DAY) and statement["bytes_processed"] is None
        assert estimate["total_bytes_processed"] is None and estimate["estimated_cost_usd"] is None
    runs = api.http.get("/api/v1/pipelines/runs", headers={"X-API-Key": key}).json()
    assert runs["count"] == 0
    usage_after = api.http.get(f"/api/v1/organizations/{slug}/usage", headers={"X-API-Key": key}).json()
    assert usage_after["today"] == usage_before["today"] and usage_after["month"] == usage_before["month"]
    bad = api.run(slug, key, {"date": DAY, "dry_run": "yes"})
    assert bad.status_code == 422


def _old_name_configs(tmp_path: Path) -> Path:
    """configs/ as before the rename: the cost table called gcp_billing_cost_daily, no renamed_from."""
    configs = tmp_path / "configs-old"
    shutil.copytree(REPO / "configs", configs)
    pipeline_file = configs / "gcp/cost/cost_billing.yml"
    spec = yaml.safe_load(pipeline_file.read_text())
    spec["variables"]["destination_table"] = "gcp_billing_cost_daily"
    del spec["steps"][0]["config"]["destination"]["renamed_from"]
    pipeline_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    return configs


@pytest.mark.parametrize("mover", ["bootstrap_sync", "first_run"])
def test_an_org_onboarded_before_keeps_every_row_under_the_new_name(
    backend: Backend, tmp_path: Path, mover: str
) -> None:
    days = [(DEMO_END.replace(day=DEMO_END.day - i)).isoformat() for i in (3, 2, 1)]
    srv = backend.new_server(tmp_path / "srv", DEMO, CONFIGS_DIR=str(_old_name_configs(tmp_path)))
    try:
        api = Api(srv)
        assert api.bootstrap().status_code == 200
        slug = unique_slug(f"renamed_{mover[:5]}")
        key = api.onboard(slug)
        for day in days[:2]:
            assert api.run_and_wait(slug, key, {"date": day})["status"] == "COMPLETED"
        srv.restart(CONFIGS_DIR=str(REPO / "configs"))  # the new version of the service
        api = Api(srv)
        if mover == "bootstrap_sync":
            response = api.http.post("/api/v1/admin/bootstrap/sync", headers=ADMIN)
            assert response.status_code == 200, response.text
            project = srv.env["GCP_PROJECT_ID"]
            moved = {"org_slug": slug, "from": f"{project}.{slug}_local.gcp_billing_cost_daily",
                     "to": f"{project}.{slug}_local.billing_cost_daily"}  # fmt: skip
            assert moved in response.json()["tables_moved"]
            again = api.http.post("/api/v1/admin/bootstrap/sync", headers=ADMIN).json()
            assert not [m for m in again["tables_moved"] if m["org_slug"] == slug]  # nothing left to move
        else:
            assert api.run_and_wait(slug, key, {"date": days[2]})["status"] == "COMPLETED"
        costs = api.costs(slug, key, days[0], days[-1])
        by_day = {d["usage_date"]: d["row_count"] for d in costs["days"]}
        for day in days[:2]:
            assert by_day[day] == _rows_of_day(day), day  # kept, once
        if mover == "first_run":
            assert by_day[days[2]] == _rows_of_day(days[2])
        assert costs["table"].endswith(".billing_cost_daily")
    finally:
        srv.stop()
