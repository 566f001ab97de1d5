"""Cancelling runs, and slow warehouse jobs that must not starve the service.

* ``POST /api/v1/pipelines/runs/{id}/cancel`` (the org's key with ``pipelines:run``, or the admin)
  cancels a running run: CANCELLED, its quota slot back once, 409 once it has ended, 404 for another
  org's run — on both backends.
* On BigQuery a cancel reaches the warehouse: the step's job is cancelled (``jobs.cancel``, seen by
  the limits proxy) and the run reads CANCELLED only once its jobs are done or cancelled; nothing it
  would have written is there.
* Twelve runs whose jobs take seconds each (the proxy's per-org latency) leave the service
  responsive: heartbeats keep their interval and an authenticated GET its usual latency, with a
  Google client pool of six threads (``GOOGLE_CLIENT_THREADS``; asyncio's default pool on this
  2-core machine, which twelve blocking waits used to exhaust for the jobs' whole duration).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.acceptance.test_scheduler import Gate, write_test_configs
from tests.backends import Backend, BigQueryBackend
from tests.conftest import DEMO, DEMO_END, unique_slug
from tests.server import Api, ServerProcess

SLOW_STATEMENT_S = 8.0  # the slow org's statements, held this long by the BigQuery-limits proxy


@pytest.fixture(scope="module")
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def control_server(backend: Backend, gate: Gate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp(f"control-{backend.name}")
    configs = write_test_configs(tmp, gate)
    srv = backend.new_server(
        tmp / "srv", DEMO, CONFIGS_DIR=str(configs), SCHEDULER_LOOP_ENABLED="false", HEARTBEAT_SECONDS="1"
    )
    assert Api(srv).bootstrap().status_code == 200
    yield srv
    srv.stop()


def cancel(api: Api, run_id: str, headers: dict[str, str]) -> httpx.Response:
    return api.http.post(f"/api/v1/pipelines/runs/{run_id}/cancel", headers=headers, timeout=120)


def usage(api: Api, slug: str, key: str) -> dict[str, Any]:
    response = api.http.get(f"/api/v1/organizations/{slug}/usage", headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_running_run_is_cancelled_once_and_gives_its_slot_back(control_server: ServerProcess, gate: Gate) -> None:
    api = Api(control_server)
    slug, other = unique_slug("cancel"), unique_slug("cancel_other")
    key = api.onboard(slug, subscription_plan="TESTONEADAY")  # one run at a time, one a day
    other_key = api.onboard(other, subscription_plan="TESTQUEUE")
    gate.opened.clear()
    started = api.run(slug, key, {}, pipeline="testing/slow/held")
    assert started.status_code == 202, started.text
    run_id = started.json()["pipeline_logging_id"]
    assert usage(api, slug, key)["concurrent"]["slots_in_use"] == 1

    assert cancel(api, run_id, {"X-API-Key": other_key}).status_code == 404  # another org's run
    answer = cancel(api, run_id, {"X-API-Key": key})
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "CANCELLED"
    run = api.wait(run_id, key)
    assert run["status"] == "CANCELLED" and "cancelled" in (run["error_message"] or "")
    assert [s["status"] for s in run["steps"]] == ["CANCELLED"]
    assert usage(api, slug, key)["concurrent"]["slots_in_use"] == 0

    again = cancel(api, run_id, {"X-API-Key": key})
    assert again.status_code == 409 and again.json()["error"] == "run_not_active", again.text
    assert usage(api, slug, key)["concurrent"]["slots_in_use"] == 0  # given back once
    gate.opened.set()
    # The day's count stays with the cancelled run (it was accepted): the daily limit of 1 holds.
    assert api.run(slug, key, {}, pipeline="testing/noop/noop_0").status_code == 429


def test_the_admin_cancels_any_orgs_run(control_server: ServerProcess, gate: Gate) -> None:
    api = Api(control_server)
    slug = unique_slug("cancel_admin")
    key = api.onboard(slug, subscription_plan="TESTQUEUE")
    gate.opened.clear()
    run_id = api.run(slug, key, {}, pipeline="testing/slow/held").json()["pipeline_logging_id"]
    answer = cancel(api, run_id, api.admin)
    gate.opened.set()
    assert answer.status_code == 202 and answer.json()["status"] == "CANCELLED", answer.text
    assert cancel(api, "no-such-run", api.admin).status_code == 404


@pytest.mark.bigquery
def test_a_cancelled_run_cancels_its_bigquery_job_before_it_reads_cancelled(
    bigquery_backend: BigQueryBackend, tmp_path_factory: pytest.TempPathFactory
) -> None:
    proxy = bigquery_backend.proxy
    srv = bigquery_backend.new_server(tmp_path_factory.mktemp("cancel-job"), DEMO, HEARTBEAT_SECONDS="1")
    try:
        api = Api(srv)
        assert api.bootstrap().status_code == 200
        slug = unique_slug("cancel_job")
        key = api.onboard(slug)
        proxy.configure(org_latency={slug: 3.0})  # the run's own statements take 3 s each
        run_id = api.run(slug, key, {"date": DEMO_END.isoformat()}).json()["pipeline_logging_id"]
        deadline = time.monotonic() + 90
        while not [r for r in proxy.stats(run_id=run_id)["statements"] if r["state"] == "running"]:
            assert time.monotonic() < deadline, "the run's first job never started"
            time.sleep(0.05)
        answer = cancel(api, run_id, api.admin)
        assert answer.status_code == 202 and answer.json()["status"] == "CANCELLED", answer.text
        run = api.wait(run_id, key)
        ended = time.time()
        statements = proxy.stats(run_id=run_id)["statements"]
        assert any(r["outcome"] == "cancelled" for r in statements), statements  # jobs.cancel reached BigQuery
        # Nothing of the run was still running, or started, once it read CANCELLED.
        assert all(r["finished_at"] is not None and r["finished_at"] <= ended for r in statements), statements
        assert run["status"] == "CANCELLED"
        proxy.configure(org_latency={})
        # Nothing of the run reached the org's cost table (made empty at onboarding).
        _, _, writers = bigquery_backend.cost_rows_match_source(srv, f"{slug}_local", DEMO_END)
        assert writers == 0  # no row of that day was written by any run
    finally:
        proxy.configure(org_latency={})
        srv.stop()


@pytest.mark.bigquery
def test_twelve_slow_jobs_leave_heartbeats_on_time_and_gets_at_their_usual_latency(
    bigquery_backend: BigQueryBackend, gate: Gate, tmp_path_factory: pytest.TempPathFactory
) -> None:
    proxy = bigquery_backend.proxy
    tmp = tmp_path_factory.mktemp("starve")
    configs = write_test_configs(tmp, gate)
    srv = bigquery_backend.new_server(
        tmp / "srv", DEMO, CONFIGS_DIR=str(configs), HEARTBEAT_SECONDS="1", GOOGLE_CLIENT_THREADS="6",
        SCHEDULER_LOOP_ENABLED="false",
    )  # fmt: skip
    try:
        api = Api(srv)
        assert api.bootstrap().status_code == 200
        slow, quick = unique_slug("slow"), unique_slug("quick")
        slow_key = api.onboard(slow, subscription_plan="TESTQUEUE")
        quick_key = api.onboard(quick)
        done = api.run_and_wait(quick, quick_key, {"date": DEMO_END.isoformat()})
        url, headers = f"/api/v1/pipelines/runs/{done['pipeline_logging_id']}", {"X-API-Key": quick_key}

        def timed_gets(n: int) -> list[float]:
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                assert api.http.get(url, headers=headers).status_code == 200
                times.append(time.perf_counter() - t0)
            return times

        usual = statistics.median(timed_gets(5))
        proxy.configure(org_latency={slow: SLOW_STATEMENT_S})
        runs = []
        for i in range(12):  # twelve days: twelve runs, none overlapping another
            day = (DEMO_END - timedelta(days=i)).isoformat()
            response = api.run(slow, slow_key, {"date": day})
            assert response.status_code == 202, response.text
            runs.append(response.json()["pipeline_logging_id"])
        deadline = time.monotonic() + 90
        while len({r["run_id"] for r in proxy.stats(org=slow)["statements"] if r["state"] == "running"}) < 12:
            assert time.monotonic() < deadline, "the twelve jobs never ran at once"
            time.sleep(0.1)
        window_start = time.time()
        during = timed_gets(5)
        time.sleep(3)
        window_end = time.time()
        beats = sorted(
            r["submitted_at"]
            for r in proxy.stats(kind="UPDATE")["statements"]
            if "heartbeat_at = CURRENT_TIMESTAMP()" in (r["sql"] or "")
            and r["table"].startswith(srv.env["GCP_PROJECT_ID"])
            and window_start - 1 <= r["submitted_at"] <= window_end
        )
        for run_id in runs:
            assert cancel(api, run_id, {"X-API-Key": slow_key}).status_code in (202, 409)
        assert statistics.median(during) <= 2 * usual + 0.25, (usual, during)
        # On time: one a second through the window. A beat that had to wait for a thread behind
        # the slow jobs would come at least SLOW_STATEMENT_S late; a busy machine (the emulator
        # shares two cores with the other shard) may stretch one beat's own round trip to ~2 s
        # (beats keep a fixed rate, so that round trip is not added to the interval).
        gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
        assert len(beats) >= 3, beats
        assert statistics.median(gaps) <= 1.5, beats
        assert max(gaps) < SLOW_STATEMENT_S / 2, beats
    finally:
        proxy.configure(org_latency={})
        srv.stop()
