"""Schedules, the trigger, the durable queue and its workers over HTTP, on both backends.

The module's server has the in-process loop off (``SCHEDULER_LOOP_ENABLED=false``): tests call
``POST /api/v1/scheduler/trigger`` and ``/process-queue`` themselves, as Cloud Scheduler would. A
schedule is made due at once with ``starts_at`` in the past and a daily cron for a minute that has
just gone by (the catch-up rule then enqueues that minute once). Test pipelines (``configs/testing``)
finish at once (an e-mail step without SMTP is SKIPPED), fail at once (a Slack step to a webhook
answering 500), or wait on a local webhook that the test opens (``Gate``).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

from tests.backends import Backend
from tests.conftest import DEMO, unique_slug
from tests.server import REPO, Api, ServerProcess, free_port

NOOP_PIPELINES = 10
LEASE_SECONDS = 4.0  # long enough for a slow emulator to renew in time; the dead-worker test waits it out


class Gate:
    """A webhook peer: ``/hold/…`` answers 200 once the gate is open; ``/fail/…`` answers 500."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.held = 0
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server hook name
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = 500
                if self.path.startswith("/hold/"):
                    gate.held += 1
                    gate.opened.wait(60)
                    status = 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.opened.set()
        self._server.shutdown()


def _slack_step(url: str) -> dict[str, Any]:
    return {
        "step_id": "call_webhook",
        "ps_type": "notify_systems.slack_notification",
        "on_failure": "stop",
        "config": {"webhook_url": url, "max_attempts": 1, "backoff_seconds": 0},
    }


def write_test_configs(root: Path, gate: Gate) -> Path:
    configs = root / "configs"
    shutil.copytree(REPO / "configs", configs)
    plans_file = configs / "system/subscription_plans.yml"
    plans = yaml.safe_load(plans_file.read_text())
    plans["plans"]["TESTQUEUE"] = {"daily_run_limit": 1000, "monthly_run_limit": 10000, "concurrent_run_limit": 20}
    plans["plans"]["TESTONEADAY"] = {"daily_run_limit": 1, "monthly_run_limit": 100, "concurrent_run_limit": 1}
    plans["plans"]["TESTONEATATIME"] = {"daily_run_limit": 100, "monthly_run_limit": 1000, "concurrent_run_limit": 1}
    plans_file.write_text(yaml.safe_dump(plans))
    pipelines: dict[str, dict[str, Any]] = {
        f"noop/noop_{i}": {
            "pipeline_id": "{org_slug}_noop_" + str(i),
            "org_runnable": True,
            "steps": [{"step_id": "note", "ps_type": "notify_systems.email_notification"}],
        }
        for i in range(NOOP_PIPELINES)
    }
    pipelines["fail/always_fails"] = {
        "pipeline_id": "{org_slug}_always_fails",
        "org_runnable": True,
        "steps": [_slack_step(gate.url("/fail/hook"))],
    }
    pipelines["slow/held"] = {
        "pipeline_id": "{org_slug}_held",
        "org_runnable": True,
        "steps": [_slack_step(gate.url("/hold/hook"))],
    }
    for path, spec in pipelines.items():
        file = configs / "testing" / f"{path}.yml"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(yaml.safe_dump(spec, sort_keys=False))
    return configs


SERVER_ENV = {
    "SCHEDULER_LOOP_ENABLED": "false",
    "SCHEDULER_WORKERS": "2",
    "QUEUE_LEASE_SECONDS": str(LEASE_SECONDS),
    "QUEUE_BACKOFF_BASE_SECONDS": "0.2",
    "QUEUE_BACKOFF_MAX_SECONDS": "1",
    "QUOTA_RETRY_AFTER_SECONDS": "1",
    "QUEUE_MAX_QUOTA_REQUEUES": "2",
    "RUN_LEASE_SECONDS": "6",
    "HEARTBEAT_SECONDS": "1",
    "WEBHOOK_TIMEOUT_SECONDS": "60",
}


@pytest.fixture(scope="module")
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def sched_server(backend: Backend, gate: Gate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp(f"sched-{backend.name}")
    configs = write_test_configs(tmp, gate)
    srv = backend.new_server(tmp / "srv", DEMO, CONFIGS_DIR=str(configs), **SERVER_ENV)
    assert Api(srv).bootstrap().status_code == 200
    yield srv
    srv.stop()


@pytest.fixture
def sapi(sched_server: ServerProcess) -> Api:
    return Api(sched_server)


# --- helpers ---------------------------------------------------------------------------------


def just_passed_daily_cron(minutes_ago: int = 2) -> tuple[str, datetime]:
    """A daily cron (UTC) whose latest due time is ``minutes_ago`` minutes back, and that time."""
    t = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).replace(second=0, microsecond=0)
    return f"{t.minute} {t.hour} * * *", t


def create(api: Api, slug: str, key: str, **body: Any) -> dict[str, Any]:
    payload = {"cron_expression": "0 6 * * *", "timezone": "UTC", **body}
    response = api.http.post(f"/api/v1/organizations/{slug}/schedules", headers={"X-API-Key": key}, json=payload)
    assert response.status_code == 201, response.text
    return dict(response.json())


def create_due(api: Api, slug: str, key: str, pipeline: str, **body: Any) -> dict[str, Any]:
    cron, _ = just_passed_daily_cron()
    starts = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    return create(api, slug, key, pipeline=pipeline, cron_expression=cron, starts_at=starts, **body)


def trigger(api: Api) -> dict[str, Any]:
    response = api.http.post("/api/v1/scheduler/trigger", headers=api.admin)
    assert response.status_code == 200, response.text
    return dict(response.json())


def process(api: Api, max_items: int = 10, timeout: float = 300.0) -> dict[str, Any]:
    response = api.http.post(
        "/api/v1/scheduler/process-queue", headers=api.admin, json={"max_items": max_items}, timeout=timeout
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def items(api: Api, slug: str, key: str, schedule_id: str) -> list[dict[str, Any]]:
    response = api.http.get(f"/api/v1/organizations/{slug}/schedules/{schedule_id}/runs", headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def only_item(api: Api, slug: str, key: str, schedule_id: str) -> dict[str, Any]:
    found = items(api, slug, key, schedule_id)
    assert len(found) == 1, found
    return found[0]


def runs_of(api: Api, slug: str) -> list[dict[str, Any]]:
    response = api.http.get("/api/v1/pipelines/runs", headers=api.admin, params={"org_slug": slug, "limit": 500})
    assert response.status_code == 200, response.text
    return list(response.json()["runs"])


def process_until(api: Api, slug: str, key: str, schedule_id: str, states: set[str], timeout: float = 60.0) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        item = only_item(api, slug, key, schedule_id)
        if item["state"] in states:
            return item
        assert time.monotonic() < deadline, f"item stuck in {item['state']}: {item}"
        process(api)
        time.sleep(0.1)


def get_schedule(api: Api, slug: str, key: str, schedule_id: str) -> httpx.Response:
    return api.http.get(f"/api/v1/organizations/{slug}/schedules/{schedule_id}", headers={"X-API-Key": key})


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- schedules: CRUD and refusals ------------------------------------------------------------


def test_schedule_crud_and_refusals(sapi: Api) -> None:
    slug, other = unique_slug("sched_crud"), unique_slug("sched_other")
    key, other_key = sapi.onboard(slug), sapi.onboard(other)
    base = f"/api/v1/organizations/{slug}/schedules"
    headers = {"X-API-Key": key}
    created = create(
        sapi,
        slug,
        key,
        pipeline="gcp/cost/cost_billing",
        cron_expression="30  2 * * *",
        timezone="America/New_York",
        parameters={"window": "last_3_days"},
        max_attempts=4,
        description="nightly cost load",
    )
    assert created["cron_expression"] == "30 2 * * *"
    assert (created["is_active"], created["max_attempts"], created["pipeline"]) == (True, 4, "gcp/cost/cost_billing")
    assert created["parameters"] == {"window": "last_3_days"}
    next_run = parse_ts(created["next_run_time"])
    assert next_run > datetime.now(UTC)
    assert next_run.astimezone(ZoneInfo("America/New_York")).strftime("%H:%M") == "02:30"
    assert created["last_run_time"] is None and created["last_run_status"] is None
    sid = created["schedule_id"]

    listed = sapi.http.get(base, headers=headers).json()
    assert [s["schedule_id"] for s in listed["schedules"]] == [sid] and listed["count"] == 1
    assert get_schedule(sapi, slug, key, sid).json() == created

    changed = sapi.http.patch(
        f"{base}/{sid}", headers=headers, json={"cron_expression": "0 7 * * 1", "timezone": "UTC"}
    )
    assert changed.status_code == 200, changed.text
    assert parse_ts(changed.json()["next_run_time"]).strftime("%H:%M %a") == "07:00 Mon"
    paused = sapi.http.patch(f"{base}/{sid}", headers=headers, json={"is_active": False})
    assert (paused.json()["is_active"], paused.json()["next_run_time"]) == (False, None)
    resumed = sapi.http.patch(f"{base}/{sid}", headers=headers, json={"is_active": True})
    assert parse_ts(resumed.json()["next_run_time"]) > datetime.now(UTC)

    good = {"pipeline": "gcp/cost/cost_billing", "cron_expression": "0 6 * * *", "parameters": {"window": "yesterday"}}
    refusals: list[tuple[dict[str, Any], int, str]] = [
        ({"pipeline": "gcp/cost/nope"}, 404, "pipeline_not_found"),
        ({"pipeline": "setup/initial/pipeline"}, 404, "pipeline_not_found"),
        ({"pipeline": "examples/notifications/combined"}, 404, "pipeline_not_found"),
        ({"cron_expression": "61 * * * *"}, 422, "invalid_schedule"),
        ({"cron_expression": "0 6 * * * *"}, 422, "invalid_schedule"),
        ({"cron_expression": "0 0 30 2 *"}, 422, "invalid_schedule"),
        ({"timezone": "Mars/Olympus_Mons"}, 422, "invalid_schedule"),
        ({"parameters": {}}, 422, "invalid_schedule"),
        ({"parameters": {"window": "last_week"}}, 422, "invalid_schedule"),
        ({"parameters": {"window": "last_93_days"}}, 422, "invalid_parameters"),
        ({"parameters": {"date": "2026-11-01"}}, 422, "invalid_schedule"),
        ({"parameters": {"window": "yesterday", "billing_export_table": "x.y.z"}}, 422, "invalid_parameters"),
        ({"max_attempts": 0}, 422, "validation_error"),
        ({"starts_at": "2026-11-01T00:00:00"}, 422, "validation_error"),  # no time zone
        ({"org_slug": other}, 422, "validation_error"),
    ]
    for change, code, error in refusals:
        response = sapi.http.post(base, headers=headers, json={**good, **change})
        assert (response.status_code, response.json()["error"]) == (code, error), (change, response.text)
    assert sapi.http.get(base, headers=headers).json()["count"] == 1  # refusals created nothing

    # Another org's key: 403 on this org's path; this org's schedule id on its own path: 404.
    assert sapi.http.get(base, headers={"X-API-Key": other_key}).status_code == 403
    assert sapi.http.post(base, headers={"X-API-Key": other_key}, json={"x": 1}).status_code == 403
    assert sapi.http.patch(f"{base}/{sid}", headers={"X-API-Key": other_key}, json={}).status_code == 403
    theirs = f"/api/v1/organizations/{other}/schedules/{sid}"
    for method in ("GET", "PATCH", "DELETE"):
        response = sapi.http.request(method, theirs, headers={"X-API-Key": other_key}, json={"is_active": False})
        assert response.status_code == 404, (method, response.text)
        assert response.json()["error"] == "schedule_not_found"
    assert sapi.http.get(f"{base}/sch_0000000000000000", headers=headers).status_code == 404
    assert sapi.http.get(f"{base}/not-an-id", headers=headers).status_code == 404
    assert get_schedule(sapi, slug, key, sid).json()["is_active"] is True  # untouched by the other org

    # The admin acts for the org; the scheduler routes are admin-only.
    assert sapi.http.get(base, headers=sapi.admin).json()["count"] == 1
    for method, path in (("POST", "trigger"), ("POST", "process-queue"), ("GET", "status")):
        response = sapi.http.request(method, f"/api/v1/scheduler/{path}", headers=headers)
        assert response.status_code == 403, response.text

    deleted = sapi.http.delete(f"{base}/{sid}", headers=headers)
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert get_schedule(sapi, slug, key, sid).status_code == 404
    assert sapi.http.delete(f"{base}/{sid}", headers=headers).status_code == 404


# --- trigger and one run -----------------------------------------------------------------------


def test_a_due_schedule_runs_exactly_once_with_its_window_resolved(sapi: Api) -> None:
    slug = unique_slug("sched_once")
    key = sapi.onboard(slug)
    cron, due = just_passed_daily_cron()
    starts = (datetime.now(UTC) - timedelta(days=3)).isoformat()  # three due times missed
    schedule = create(
        sapi,
        slug,
        key,
        pipeline="gcp/cost/cost_billing",
        cron_expression=cron,
        starts_at=starts,
        parameters={"window": "last_3_days"},
    )
    sid = schedule["schedule_id"]
    first = trigger(sapi)
    mine = [i for i in first["items"] if i["schedule_id"] == sid]
    assert len(mine) == 1 and parse_ts(mine[0]["due_time"]) == due  # the latest missed time, once
    assert [i for i in trigger(sapi)["items"] if i["schedule_id"] == sid] == []  # nothing new
    after = get_schedule(sapi, slug, key, sid).json()
    assert parse_ts(after["last_run_time"]) == due
    assert parse_ts(after["next_run_time"]) == due + timedelta(days=1)

    item = process_until(sapi, slug, key, sid, {"COMPLETED", "FAILED"})
    assert item["state"] == "COMPLETED", item
    assert item["attempts"] == 1 and item["last_error"] is None
    # One catch-up run covers the three missed due times: from the window of the first one
    # (the first cron time at or after starts_at, two days before ``due``) to the latest's.
    first_missed_day = (due - timedelta(days=2)).date()
    expected = {
        "start_date": str(first_missed_day - timedelta(days=3)),
        "end_date": str(due.date() - timedelta(days=1)),
    }
    assert item["parameters"] == expected
    assert "lease_owner" not in item

    runs = runs_of(sapi, slug)
    assert len(runs) == 1
    run = runs[0]
    assert (run["status"], run["trigger_by"], run["schedule_id"], run["queue_item_id"]) == (
        "COMPLETED",
        "scheduler",
        sid,
        item["queue_item_id"],
    )
    assert (run["start_date"], run["end_date"]) == (expected["start_date"], expected["end_date"])
    detail = sapi.http.get(f"/api/v1/pipelines/runs/{run['pipeline_logging_id']}", headers={"X-API-Key": key}).json()
    assert [s["status"] for s in detail["steps"]][0] == "COMPLETED"  # a real run, with step logs
    listed = sapi.http.get(f"/api/v1/organizations/{slug}/schedules", headers={"X-API-Key": key}).json()
    (shown,) = listed["schedules"]
    assert (shown["last_run_status"], shown["last_pipeline_logging_id"]) == ("COMPLETED", run["pipeline_logging_id"])
    usage = sapi.http.get(f"/api/v1/organizations/{slug}/usage", headers={"X-API-Key": key}).json()
    assert usage["today"]["runs"] == 1  # scheduled runs count like any accepted run

    assert [i for i in trigger(sapi)["items"] if i["schedule_id"] == sid] == []
    process(sapi)
    assert len(runs_of(sapi, slug)) == 1
    status = sapi.http.get("/api/v1/scheduler/status", headers=sapi.admin)
    assert status.status_code == 200, status.text
    body = status.json()
    assert set(body["queue"]) == {"QUEUED", "RUNNING", "RETRY", "COMPLETED", "FAILED", "CANCELLED"}
    assert body["queue"]["COMPLETED"] >= 1 and body["last_trigger_at"] is not None
    assert body["schedules"]["active"] >= 1 and body["loop"]["enabled"] is False


# --- two workers, one queue -----------------------------------------------------------------


def second_server(srv: ServerProcess, tmp: Path) -> ServerProcess:
    """Another process on the same warehouse (BigQuery: same project and endpoint)."""
    env = {k: v for k, v in srv.env.items() if k not in {"PORT"}}
    other = ServerProcess(tmp, env)
    other.start()
    return other


def test_two_workers_never_run_one_item_twice(
    backend: Backend, sched_server: ServerProcess, sapi: Api, tmp_path: Path
) -> None:
    orgs = [unique_slug("sched_many") for _ in range(10)]
    keys = {slug: sapi.onboard(slug, subscription_plan="TESTQUEUE") for slug in orgs}
    schedule_ids: set[str] = set()
    for slug in orgs:
        for i in range(NOOP_PIPELINES):
            schedule_ids.add(create_due(sapi, slug, keys[slug], f"testing/noop/noop_{i}")["schedule_id"])
    enqueued = [i for i in trigger(sapi)["items"] if i["schedule_id"] in schedule_ids]
    assert len(enqueued) == 100
    item_ids = {i["queue_item_id"] for i in enqueued}

    # DuckDB: one process per file, so two concurrent process-queue calls (workers) in it;
    # BigQuery: two server processes on the same project, each with its own workers.
    servers = [sched_server]
    if backend.name == "bigquery":
        servers.append(second_server(sched_server, tmp_path))
    try:
        results: list[dict[str, Any]] = []
        errors: list[BaseException] = []

        def drain(server: ServerProcess) -> None:
            try:
                api = Api(server)
                while True:
                    done = process(api, max_items=25)
                    results.append(done)
                    if done["processed"] == 0:
                        return
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=drain, args=(servers[i % len(servers)],)) for i in range(2 * len(servers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        assert not errors, errors
    finally:
        for extra in servers[1:]:
            extra.stop()

    per_item = Counter[str]()
    for slug in orgs:
        for run in runs_of(sapi, slug):
            assert run["trigger_by"] == "scheduler" and run["status"] == "COMPLETED", run
            per_item[run["queue_item_id"]] += 1
    assert set(per_item) == item_ids
    assert max(per_item.values()) == 1  # every item ran exactly once
    completed = Counter(o["queue_item_id"] for r in results for o in r["items"] if o["state"] == "COMPLETED")
    assert {i: completed[i] for i in item_ids} == dict.fromkeys(item_ids, 1)  # each completed by one worker
    assert sum(1 for r in results if r["processed"]) >= 2, "only one worker got to work"
    for slug in orgs[:2]:
        for schedule in sapi.http.get(f"/api/v1/organizations/{slug}/schedules", headers=sapi.admin).json()[
            "schedules"
        ]:
            assert schedule["last_run_status"] == "COMPLETED"


def test_a_dead_workers_item_is_claimed_again_after_its_lease(
    sched_server: ServerProcess, gate: Gate, tmp_path: Path
) -> None:
    api = Api(sched_server)
    slug = unique_slug("sched_kill")
    key = api.onboard(slug)
    sid = create_due(api, slug, key, "testing/slow/held", max_attempts=10)["schedule_id"]
    trigger(api)
    gate.opened.clear()
    held_before = gate.held
    worker = threading.Thread(target=lambda: _ignore_errors(lambda: process(api, max_items=1)), daemon=True)
    worker.start()
    deadline = time.monotonic() + 30
    while gate.held == held_before:  # the run is inside its step: the item is RUNNING, leased
        assert time.monotonic() < deadline, "the item never started"
        time.sleep(0.02)
    running = only_item(api, slug, key, sid)
    assert running["state"] == "RUNNING" and running["attempts"] == 1
    sched_server.stop(kill=True)  # the worker dies holding the lease
    gate.opened.set()
    sched_server.start()
    api = Api(sched_server)
    assert only_item(api, slug, key, sid)["state"] == "RUNNING"  # until its lease runs out
    time.sleep(LEASE_SECONDS)
    item = process_until(api, slug, key, sid, {"COMPLETED", "FAILED"}, timeout=90)
    assert item["state"] == "COMPLETED", item
    assert item["attempts"] >= 2
    runs = [r for r in runs_of(api, slug) if r["queue_item_id"] == item["queue_item_id"]]
    statuses = Counter(r["status"] for r in runs)
    assert statuses["COMPLETED"] == 1 and statuses["FAILED"] == 1, runs  # the dead worker's run: owner lost
    lost = next(r for r in runs if r["status"] == "FAILED")
    assert "owner lost" in lost["error_message"]


def _ignore_errors(fn: Any) -> None:
    try:
        fn()
    except Exception:
        pass


# --- retries, failures, quotas -----------------------------------------------------------------


def test_failed_runs_are_retried_with_backoff_then_the_item_fails(sapi: Api) -> None:
    slug = unique_slug("sched_fail")
    key = sapi.onboard(slug)
    sid = create_due(sapi, slug, key, "testing/fail/always_fails", max_attempts=3)["schedule_id"]
    trigger(sapi)
    before = datetime.now(UTC)
    first = process(sapi, max_items=1)
    assert [o["state"] for o in first["items"]] == ["RETRY"]
    waiting = only_item(sapi, slug, key, sid)
    assert waiting["state"] == "RETRY" and waiting["attempts"] == 1
    assert "attempt 1 of 3" in waiting["last_error"] and "FAILED" in waiting["last_error"]
    # Backoff, not at once: at least the base delay after the attempt started.
    assert parse_ts(waiting["next_attempt_at"]) >= before + timedelta(
        seconds=float(SERVER_ENV["QUEUE_BACKOFF_BASE_SECONDS"])
    )
    item = process_until(sapi, slug, key, sid, {"COMPLETED", "FAILED"})
    assert item["state"] == "FAILED" and item["attempts"] == 3, item
    assert item["last_error"].startswith("attempt 3 of 3: run ") and "ended FAILED" in item["last_error"]
    assert item["completed_at"] is not None
    runs = sorted(
        (r for r in runs_of(sapi, slug) if r["queue_item_id"] == item["queue_item_id"]), key=lambda r: r["created_at"]
    )
    assert [r["status"] for r in runs] == ["FAILED", "FAILED", "FAILED"]
    gaps = [(parse_ts(b["created_at"]) - parse_ts(a["created_at"])).total_seconds() for a, b in pairwise(runs)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4, gaps  # exponential backoff (base 0.2 s)
    shown = get_schedule(sapi, slug, key, sid).json()
    assert (shown["last_run_status"], shown["last_pipeline_logging_id"]) == ("FAILED", runs[-1]["pipeline_logging_id"])
    process(sapi)
    assert only_item(sapi, slug, key, sid)["attempts"] == 3  # FAILED is final


def test_an_overlapping_run_makes_the_item_retry_then_it_completes(sapi: Api, gate: Gate) -> None:
    slug = unique_slug("sched_409")
    key = sapi.onboard(slug)
    gate.opened.clear()
    manual = sapi.run(slug, key, {}, pipeline="testing/slow/held")
    assert manual.status_code == 202, manual.text
    sid = create_due(sapi, slug, key, "testing/slow/held", max_attempts=5)["schedule_id"]
    trigger(sapi)
    refused = process(sapi, max_items=1)
    assert [o["state"] for o in refused["items"]] == ["RETRY"]
    item = only_item(sapi, slug, key, sid)
    assert "409 run_in_progress" in item["last_error"] and item["pipeline_logging_id"] is None
    gate.opened.set()
    assert sapi.wait(manual.json()["pipeline_logging_id"], key)["status"] == "COMPLETED"
    item = process_until(sapi, slug, key, sid, {"COMPLETED", "FAILED"})
    assert item["state"] == "COMPLETED" and item["attempts"] == 2, item


def test_a_quota_refusal_is_recorded_and_waits_for_the_reset(sapi: Api) -> None:
    slug = unique_slug("sched_quota")
    key = sapi.onboard(slug, subscription_plan="TESTONEADAY")
    manual = sapi.run(slug, key, {}, pipeline="testing/noop/noop_0")
    assert manual.status_code == 202, manual.text
    sapi.wait(manual.json()["pipeline_logging_id"], key)
    sid = create_due(sapi, slug, key, "testing/noop/noop_1")["schedule_id"]
    trigger(sapi)
    process(sapi)
    item = only_item(sapi, slug, key, sid)
    assert item["state"] == "RETRY", item
    assert item["last_error"].startswith("429 quota_exceeded: daily run limit reached")
    assert item["attempts"] == 0  # a refusal is not an attempt
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    reset = datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=UTC)
    assert abs((parse_ts(item["next_attempt_at"]) - reset).total_seconds()) < 60  # the quota's reset
    for _ in range(3):  # not retried in a hot loop
        process(sapi)
    again = only_item(sapi, slug, key, sid)
    assert (again["state"], again["attempts"], again["updated_at"]) == ("RETRY", 0, item["updated_at"])
    assert [r for r in runs_of(sapi, slug) if r["queue_item_id"]] == []
    assert get_schedule(sapi, slug, key, sid).json()["last_run_status"] == "RETRY"


def test_quota_requeues_are_bounded_and_visible(sapi: Api, gate: Gate) -> None:
    """A concurrent-limit refusal waits Retry-After and tries again, QUEUE_MAX_QUOTA_REQUEUES (2)
    times; then the item ends FAILED saying why, and the schedule shows it."""
    slug = unique_slug("sched_requeue")
    key = sapi.onboard(slug, subscription_plan="TESTONEATATIME")
    gate.opened.clear()
    held = sapi.run(slug, key, {}, pipeline="testing/slow/held")  # holds the only slot
    assert held.status_code == 202, held.text
    try:
        sid = create_due(sapi, slug, key, "testing/noop/noop_2")["schedule_id"]
        trigger(sapi)
        for n in (1, 2):
            process(sapi)
            item = only_item(sapi, slug, key, sid)
            assert (item["state"], item["requeues"], item["attempts"]) == ("RETRY", n, 0), item
            assert "concurrent run limit reached" in item["last_error"] and f"requeue {n} of 2" in item["last_error"]
            time.sleep(1.2)  # QUOTA_RETRY_AFTER_SECONDS
        process(sapi)
        item = only_item(sapi, slug, key, sid)
        assert (item["state"], item["requeues"]) == ("FAILED", 2), item
        assert "waited for the quota 2 times" in item["last_error"]
        assert get_schedule(sapi, slug, key, sid).json()["last_run_status"] == "FAILED"
    finally:
        gate.opened.set()
    assert sapi.wait(held.json()["pipeline_logging_id"], key)["status"] == "COMPLETED"


# --- pause and delete ---------------------------------------------------------------------------


def test_pause_and_delete_stop_future_runs(sapi: Api) -> None:
    slug = unique_slug("sched_stop")
    key = sapi.onboard(slug)
    base = f"/api/v1/organizations/{slug}/schedules"
    headers = {"X-API-Key": key}
    paused_first = create_due(sapi, slug, key, "testing/noop/noop_0")["schedule_id"]
    queued_then_paused = create_due(sapi, slug, key, "testing/noop/noop_1")["schedule_id"]
    queued_then_deleted = create_due(sapi, slug, key, "testing/noop/noop_2")["schedule_id"]
    assert sapi.http.patch(f"{base}/{paused_first}", headers=headers, json={"is_active": False}).status_code == 200
    enqueued = {i["schedule_id"] for i in trigger(sapi)["items"]}
    assert paused_first not in enqueued
    assert {queued_then_paused, queued_then_deleted} <= enqueued
    paused = sapi.http.patch(f"{base}/{queued_then_paused}", headers=headers, json={"is_active": False})
    assert paused.status_code == 200 and paused.json()["next_run_time"] is None
    deleted = sapi.http.delete(f"{base}/{queued_then_deleted}", headers=headers)
    assert deleted.json() == {"schedule_id": queued_then_deleted, "deleted": True, "cancelled_queue_items": 1}
    process(sapi, max_items=20)
    cancelled = only_item(sapi, slug, key, queued_then_paused)
    assert (cancelled["state"], cancelled["last_error"]) == ("CANCELLED", "schedule paused")
    assert items(sapi, slug, key, paused_first) == []
    assert runs_of(sapi, slug) == []  # nothing ran
    resumed = sapi.http.patch(f"{base}/{paused_first}", headers=headers, json={"is_active": True}).json()
    assert parse_ts(resumed["next_run_time"]) > datetime.now(UTC)  # from now on: the missed time is not run
    assert paused_first not in {i["schedule_id"] for i in trigger(sapi)["items"]}


# --- the development loop -----------------------------------------------------------------------


def test_the_local_loop_runs_a_schedule_by_itself(backend: Backend, gate: Gate, tmp_path: Path) -> None:
    configs = write_test_configs(tmp_path, gate)
    srv = backend.new_server(tmp_path / "srv", None, CONFIGS_DIR=str(configs), SCHEDULER_LOOP_INTERVAL_SECONDS="0.3")
    try:
        api = Api(srv)
        assert api.bootstrap().status_code == 200
        status = api.http.get("/api/v1/scheduler/status", headers=api.admin).json()
        assert status["loop"] == {"enabled": True, "interval_seconds": 0.3}  # on by default in development
        slug = unique_slug("sched_loop")
        key = api.onboard(slug)
        sid = create_due(api, slug, key, "testing/noop/noop_3")["schedule_id"]
        deadline = time.monotonic() + 60
        while get_schedule(api, slug, key, sid).json()["last_run_status"] not in {"COMPLETED", "FAILED"}:
            assert time.monotonic() < deadline, "the loop never ran the schedule"
            time.sleep(0.1)
        (run,) = runs_of(api, slug)
        assert (run["trigger_by"], run["schedule_id"]) == ("scheduler", sid)
    finally:
        srv.stop()
