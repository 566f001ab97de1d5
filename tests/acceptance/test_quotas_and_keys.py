"""Plans, quotas, org lifecycle and key lifecycle over HTTP, on both backends."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.backends import Backend, start_busy_server
from tests.conftest import DEMO, DEMO_END, unique_slug
from tests.server import REPO, Api, ServerProcess

DAY = DEMO_END.isoformat()


def usage(api: Api, slug: str, key: str) -> dict[str, Any]:
    response = api.http.get(f"/api/v1/organizations/{slug}/usage", headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return dict(response.json())


def assert_quota_refusal(response: Any, limit: str, count: int, maximum: int) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["error"] == "quota_exceeded"
    assert body["limit"] == limit
    assert (body["count"], body["maximum"]) == (count, maximum)
    assert limit in body["message"] and f"{count} of {maximum}" in body["message"]
    assert int(response.headers["Retry-After"]) >= 1
    return dict(body)


def test_daily_limit_trips_exactly_at_the_limit_and_refusals_cost_nothing(api: Api) -> None:
    slug = unique_slug("daily")
    key = api.onboard(slug, subscription_plan="STARTER")  # 6 a day, 1 at a time
    for _ in range(6):
        assert api.run_and_wait(slug, key, {"date": DAY})["status"] == "COMPLETED"
    assert api.run(slug, key, {"date": "2026-02-30"}).status_code == 422  # refused: consumes nothing
    body = assert_quota_refusal(api.run(slug, key, {"date": DAY}), "daily", 6, 6)
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    assert body["resets_at"] == f"{tomorrow}T00:00:00Z"
    report = usage(api, slug, key)
    assert report["today"] == {**report["today"], "runs": 6, "limit": 6, "remaining": 0}
    assert report["month"]["runs"] == 6
    assert report["concurrent"] == {"running": 0, "slots_in_use": 0, "limit": 1}
    runs = api.http.get("/api/v1/pipelines/runs", headers={"X-API-Key": key}).json()
    assert runs["count"] == 6  # the refused ones never became runs


def test_plan_change_applies_to_the_next_run(api: Api) -> None:
    slug = unique_slug("plan")
    key = api.onboard(slug, subscription_plan="STARTER")
    for _ in range(6):
        api.run_and_wait(slug, key, {"date": DAY})
    assert api.run(slug, key, {"date": DAY}).status_code == 429
    changed = api.http.put(
        f"/api/v1/admin/organizations/{slug}/subscription",
        headers=api.admin,
        json={"subscription_plan": "professional"},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["subscription_plan"] == "PROFESSIONAL"
    assert changed.json()["limits"] == {"daily_run_limit": 25, "monthly_run_limit": 750, "concurrent_run_limit": 2}
    assert api.run_and_wait(slug, key, {"date": DAY})["status"] == "COMPLETED"
    assert usage(api, slug, key)["today"]["limit"] == 25
    bad = api.http.put(
        f"/api/v1/admin/organizations/{slug}/subscription", headers=api.admin, json={"subscription_plan": "GOLD"}
    )
    assert bad.status_code == 422
    assert (
        api.http.put(
            f"/api/v1/admin/organizations/{slug}/subscription",
            headers={"X-API-Key": key},
            json={"subscription_plan": "SCALE"},
        ).status_code
        == 403
    )


def test_suspend_blocks_the_org_keeps_its_data_and_reactivate_restores(api: Api) -> None:
    slug = unique_slug("suspend")
    key = api.onboard(slug)
    api.run_and_wait(slug, key, {"date": DAY})
    headers = {"X-API-Key": key}
    suspended = api.http.post(
        f"/api/v1/admin/organizations/{slug}/suspend", headers=api.admin, json={"reason": "unpaid invoice"}
    )
    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["status"] == "SUSPENDED"
    for response in (
        api.run(slug, key, {"date": DAY}),
        api.http.get(f"/api/v1/organizations/{slug}", headers=headers),
        api.http.post(f"/api/v1/pipelines/run/{slug}/gcp/cost/cost_billing", headers=api.admin, json={"date": DAY}),
    ):
        assert response.status_code == 403, response.text
        assert response.json()["error"] == "org_suspended"
        assert "suspended" in response.json()["message"]
    costs = api.http.get(
        f"/api/v1/organizations/{slug}/costs/daily", headers=api.admin, params={"start_date": DAY, "end_date": DAY}
    )
    assert costs.json()["totals"]["row_count"] > 0  # the data stays
    listed = api.http.get(
        "/api/v1/admin/organizations", headers=api.admin, params={"status": "SUSPENDED", "limit": 1000}
    ).json()
    assert slug in [o["org_slug"] for o in listed["organizations"]]
    assert api.http.post(f"/api/v1/admin/organizations/{slug}/reactivate", headers=api.admin).status_code == 200
    assert api.run_and_wait(slug, key, {"date": DAY})["status"] == "COMPLETED"
    everyone: list[dict[str, Any]] = []
    page: dict[str, Any] = {"next_page_token": None}
    while True:  # the shared server holds many organizations: read every page
        token = page["next_page_token"]
        params = {"limit": 1000, **({"page_token": token} if token else {})}
        page = api.http.get("/api/v1/admin/organizations", headers=api.admin, params=params).json()
        everyone += page["organizations"]
        if page["next_page_token"] is None:
            break
    mine = next(o for o in everyone if o["org_slug"] == slug)
    assert (mine["status"], mine["subscription_plan"]) == ("ACTIVE", "SCALE")


def test_rotation_without_grace_revokes_the_old_key_at_once(api: Api) -> None:
    slug = unique_slug("rotate")
    old = api.onboard(slug)
    response = api.http.post(
        f"/api/v1/organizations/{slug}/api-keys/rotate", headers={"X-API-Key": old}, json={"grace_period_seconds": 0}
    )
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    new = response.json()["api_key"]
    assert new != old and new.startswith(f"{slug}_api_")
    assert api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": new}).status_code == 200
    refused = api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": old})
    assert refused.status_code == 401
    listed = api.http.get(f"/api/v1/organizations/{slug}/api-keys", headers={"X-API-Key": new})
    text = listed.text
    assert old not in text and new not in text and old[-16:] not in text and new[-16:] not in text
    statuses = sorted(k["status"] for k in listed.json()["keys"])
    assert statuses == ["ACTIVE", "REVOKED"]
    for k in listed.json()["keys"]:
        assert set(k) >= {"key_id", "created_at", "last_used_at", "expires_at", "status"}
        assert "key_hash" not in k and "encrypted_key" not in k


def test_rotation_with_grace_keeps_the_old_key_until_it_expires(api: Api) -> None:
    slug = unique_slug("grace")
    old = api.onboard(slug)
    grace = 5
    rotated_at = time.time()
    response = api.http.post(
        f"/api/v1/organizations/{slug}/api-keys/rotate",
        headers={"X-API-Key": old},
        json={"grace_period_seconds": grace},
    )
    new = response.json()["api_key"]
    assert api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": old}).status_code == 200
    while (expired := api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": old})).status_code == 200:
        assert time.time() < rotated_at + grace + 15, "the old key never expired"
        time.sleep(0.2)
    assert time.time() >= rotated_at + grace  # not before the grace period ended
    assert expired.status_code == 401
    assert expired.json()["error"] == "api_key_expired"
    assert api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": new}).status_code == 200
    keys = api.http.get(f"/api/v1/organizations/{slug}/api-keys", headers={"X-API-Key": new}).json()["keys"]
    assert sorted(k["status"] for k in keys) == ["ACTIVE", "EXPIRED"]
    for bad in (
        {"grace_period_seconds": -1},
        {"grace_period_seconds": "10"},
        {"grace_period_seconds": 10**9},
        {"x": 1},
    ):
        r = api.http.post(f"/api/v1/organizations/{slug}/api-keys/rotate", headers={"X-API-Key": new}, json=bad)
        assert r.status_code == 422, (bad, r.text)


def test_admin_revokes_a_key_without_replacement(api: Api) -> None:
    slug = unique_slug("revoke")
    key = api.onboard(slug)
    deadline = time.monotonic() + 5
    while True:  # last use is recorded off the request path (KEY_TOUCH_INTERVAL_SECONDS=0 in tests)
        (entry,) = api.http.get(f"/api/v1/organizations/{slug}/api-keys", headers={"X-API-Key": key}).json()["keys"]
        if entry["last_used_at"] is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert entry["last_used_at"] is not None
    other = unique_slug("revoke_other")
    other_key = api.onboard(other)
    url = f"/api/v1/admin/organizations/{other}/api-keys/{entry['key_id']}"
    assert api.http.delete(url, headers=api.admin).status_code == 404  # not that org's key
    assert (
        api.http.delete(
            f"/api/v1/admin/organizations/{slug}/api-keys/{entry['key_id']}", headers={"X-API-Key": key}
        ).status_code
        == 403
    )
    revoked = api.http.delete(f"/api/v1/admin/organizations/{slug}/api-keys/{entry['key_id']}", headers=api.admin)
    assert revoked.status_code == 200, revoked.text
    assert api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": key}).status_code == 401
    assert api.http.get(f"/api/v1/organizations/{other}", headers={"X-API-Key": other_key}).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/organizations/{a}/usage"),
        ("GET", "/api/v1/organizations/{a}/api-keys"),
        ("POST", "/api/v1/organizations/{a}/api-keys/rotate"),
        ("PUT", "/api/v1/admin/organizations/{a}/subscription"),
        ("POST", "/api/v1/admin/organizations/{a}/suspend"),
        ("POST", "/api/v1/admin/organizations/{a}/reactivate"),
        ("GET", "/api/v1/admin/organizations"),
        ("DELETE", "/api/v1/admin/organizations/{a}/api-keys/key_0123456789abcdef"),
    ],
)
def test_another_orgs_key_is_refused_on_every_lifecycle_route(api: Api, method: str, path: str) -> None:
    a, b = unique_slug("owner"), unique_slug("intruder")
    key_a = api.onboard(a)
    key_b = api.onboard(b)
    body = {"subscription_plan": "SCALE"} if "subscription" in path else {}
    response = api.http.request(method, path.format(a=a), headers={"X-API-Key": key_b}, json=body)
    assert response.status_code == 403, response.text
    assert api.http.get(f"/api/v1/organizations/{a}", headers={"X-API-Key": key_a}).status_code == 200
    keys = api.http.get(f"/api/v1/organizations/{a}/api-keys", headers={"X-API-Key": key_a}).json()["keys"]
    assert [k["status"] for k in keys] == ["ACTIVE"]


ALL_SCOPES = ["pipelines:run", "pipelines:read", "org:read", "org:write"]


def _rotate(api: Api, slug: str, headers: dict[str, str], **body: Any) -> Any:
    return api.http.post(f"/api/v1/organizations/{slug}/api-keys/rotate", headers=headers, json=body)


def test_a_key_does_only_what_its_scopes_allow(api: Api) -> None:
    slug = unique_slug("scoped")
    full = api.onboard(slug)
    listed = api.http.get(f"/api/v1/organizations/{slug}/api-keys", headers={"X-API-Key": full}).json()["keys"]
    assert [sorted(k["scopes"]) for k in listed] == [sorted(ALL_SCOPES)]

    # Narrowing the org's only full key would leave it without one: refused.
    narrowed = _rotate(api, slug, {"X-API-Key": full}, scopes=["org:read", "pipelines:read"])
    assert narrowed.status_code == 409 and narrowed.json()["error"] == "last_full_key", narrowed.text
    # A read-only key for a dashboard: a named key of its own, beside the full one.
    response = api.http.post(
        f"/api/v1/organizations/{slug}/api-keys",
        headers={"X-API-Key": full},
        json={"name": "dashboard", "scopes": ["org:read", "pipelines:read"]},
    )
    assert response.status_code == 201, response.text
    assert sorted(response.json()["scopes"]) == ["org:read", "pipelines:read"]
    reader = {"X-API-Key": response.json()["api_key"]}
    assert api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": full}).status_code == 200

    costs = f"/costs/daily?start_date={DAY}&end_date={DAY}"
    for path in ("", "/usage", "/api-keys", "/notifications", "/schedules", costs):
        assert api.http.get(f"/api/v1/organizations/{slug}{path}", headers=reader).status_code == 200, path
    assert api.http.get("/api/v1/pipelines/runs", headers=reader).status_code == 200

    refused = [
        api.http.post(f"/api/v1/pipelines/run/{slug}/gcp/cost/cost_billing", headers=reader, json={"date": DAY}),
        api.http.post(f"/api/v1/organizations/{slug}/schedules", headers=reader, json={}),
        api.http.put(f"/api/v1/organizations/{slug}/notifications", headers=reader, json={"x": 1}),  # 403 before 422
        api.http.delete(f"/api/v1/organizations/{slug}/credentials/gcp", headers=reader),
        api.http.put(f"/api/v1/organizations/{slug}/billing-source", headers=reader, json={}),
        api.http.post(f"/api/v1/organizations/{slug}/api-keys", headers=reader, json={"name": "x"}),
        _rotate(api, slug, reader),
    ]
    for r in refused:
        assert r.status_code == 403, (r.request.url, r.text)
        assert r.json()["error"] == "insufficient_scope" and r.json()["request_id"]
    assert api.http.get("/api/v1/pipelines/runs", headers=reader).json()["count"] == 0  # nothing started
    assert usage(api, slug, reader["X-API-Key"])["today"]["runs"] == 0

    # The admin issues keys of any scope; a key never grants more than its caller.
    response = api.http.post(
        f"/api/v1/organizations/{slug}/api-keys",
        headers=api.admin,
        json={"name": "writer", "scopes": ["org:read", "org:write"]},
    )
    assert response.status_code == 201, response.text
    writer = {"X-API-Key": response.json()["api_key"]}
    wider = api.http.post(
        f"/api/v1/organizations/{slug}/api-keys",
        headers=writer,
        json={"name": "wider", "scopes": ["org:read", "org:write", "pipelines:run"]},
    )
    assert wider.status_code == 403 and wider.json()["error"] == "insufficient_scope", wider.text
    assert _rotate(api, slug, writer, scopes=["org:read", "org:write", "pipelines:run"]).status_code == 403
    assert api.http.get(f"/api/v1/organizations/{slug}", headers=writer).status_code == 200  # unchanged
    assert _rotate(api, slug, api.admin, scopes=["pipelines:all"]).status_code == 422
    assert _rotate(api, slug, api.admin, scopes=[]).status_code == 422
    several = _rotate(api, slug, api.admin)  # three active keys: which one?
    assert several.status_code == 422 and several.json()["error"] == "key_id_required", several.text
    writer_id = response.json()["key_id"]
    response = _rotate(api, slug, api.admin, key_id=writer_id, scopes=ALL_SCOPES)  # the admin may widen
    assert response.status_code == 200, response.text
    assert sorted(response.json()["scopes"]) == sorted(ALL_SCOPES) and response.json()["name"] == "writer"
    again = {"X-API-Key": response.json()["api_key"]}
    assert api.http.get(f"/api/v1/organizations/{slug}", headers=writer).status_code == 401  # replaced, no grace
    assert api.run(slug, again["X-API-Key"], {"date": "2026-02-30"}).status_code == 422  # past the scope check


# --- dedicated servers ----------------------------------------------------------------------


def _configs_with_plan(tmp: Path, name: str, daily: int, monthly: int, concurrent: int) -> Path:
    configs = tmp / "configs"
    shutil.copytree(REPO / "configs", configs)
    plans_file = configs / "system/subscription_plans.yml"
    plans = yaml.safe_load(plans_file.read_text())
    plans["plans"][name] = {"daily_run_limit": daily, "monthly_run_limit": monthly, "concurrent_run_limit": concurrent}
    plans_file.write_text(yaml.safe_dump(plans))
    return configs


def test_monthly_limit_trips_exactly_at_the_limit(backend: Backend, tmp_path: Path) -> None:
    configs = _configs_with_plan(tmp_path, "TESTMONTH", daily=10, monthly=3, concurrent=1)
    srv = backend.new_server(tmp_path / "srv", DEMO, CONFIGS_DIR=str(configs))
    try:
        api = Api(srv)
        api.bootstrap()
        slug = unique_slug("monthly")
        key = api.onboard(slug, subscription_plan="TESTMONTH")
        for _ in range(3):
            assert api.run_and_wait(slug, key, {"date": DAY})["status"] == "COMPLETED"
        body = assert_quota_refusal(api.run(slug, key, {"date": DAY}), "monthly", 3, 3)
        assert body["resets_at"].endswith("-01T00:00:00Z")
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def slow_server(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Several big days, so parallel runs overlap in time."""
    tmp = tmp_path_factory.mktemp(f"slow-{backend.name}")
    srv = start_busy_server(backend, tmp, days=5, duckdb_rows=25_000, emulator_rows=4_000)
    yield srv
    srv.stop()


def test_parallel_requests_beyond_the_concurrent_limit_get_429(slow_server: ServerProcess) -> None:
    api = Api(slow_server)
    slug = unique_slug("parallel")
    key = api.onboard(slug, subscription_plan="PROFESSIONAL")  # 2 at a time
    responses: list[Any] = []

    def fire(day: int) -> None:
        responses.append(Api(slow_server).run(slug, key, {"date": (DEMO_END - timedelta(days=day)).isoformat()}))

    threads = [threading.Thread(target=fire, args=(d,)) for d in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in responses)
    assert codes == [202, 202, 429, 429, 429], [r.text for r in responses]
    for refused in (r for r in responses if r.status_code == 429):
        assert_quota_refusal(refused, "concurrent", 2, 2)
    for accepted in (r for r in responses if r.status_code == 202):
        assert api.wait(accepted.json()["pipeline_logging_id"], key)["status"] == "COMPLETED"
    report = usage(api, slug, key)
    assert report["today"]["runs"] == 2  # only accepted runs count
    assert report["concurrent"] == {"running": 0, "slots_in_use": 0, "limit": 2}


def test_slot_is_released_after_a_failed_run(backend: Backend, tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    pipeline_file = configs / "gcp/cost/cost_billing.yml"
    spec = yaml.safe_load(pipeline_file.read_text())
    spec["steps"][0]["config"]["source"]["query"] += "\n  WHERE b.cost_type != 'tax'\n"  # fails reconciliation
    pipeline_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    srv = backend.new_server(tmp_path / "srv", DEMO, CONFIGS_DIR=str(configs))
    try:
        api = Api(srv)
        api.bootstrap()
        slug = unique_slug("failslot")
        key = api.onboard(slug, subscription_plan="STARTER")
        assert api.run_and_wait(slug, key, {"date": DAY})["status"] == "FAILED"
        assert api.run_and_wait(slug, key, {"date": DAY})["status"] == "FAILED"  # the slot came back
        report = usage(api, slug, key)
        assert report["today"]["runs"] == 2  # failed runs count: they were accepted
        assert report["concurrent"]["slots_in_use"] == 0
    finally:
        srv.stop()


def test_slot_is_released_after_a_crash(slow_server: ServerProcess) -> None:
    api = Api(slow_server)
    slug = unique_slug("crashslot")
    key = api.onboard(slug, subscription_plan="STARTER")
    run_id = api.run(slug, key, {"date": DAY}).json()["pipeline_logging_id"]
    deadline = time.monotonic() + 10
    while api.http.get(f"/api/v1/pipelines/runs/{run_id}", headers={"X-API-Key": key}).json()["status"] == "PENDING":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    slow_server.stop(kill=True)
    slow_server.start()
    api = Api(slow_server)
    deadline = time.monotonic() + 20
    while usage(api, slug, key)["concurrent"]["slots_in_use"] != 0:
        assert time.monotonic() < deadline, "the dead run's slot was never given back"
        time.sleep(0.2)
    assert api.run_and_wait(slug, key, {"date": DAY})["status"] == "COMPLETED"


def test_failed_authentication_is_slowed_down(backend: Backend, tmp_path: Path) -> None:
    srv = backend.new_server(tmp_path / "srv", None, AUTH_FAILURE_LIMIT="5", AUTH_FAILURE_WINDOW_SECONDS="60")
    try:
        api = Api(srv)
        assert api.bootstrap().status_code == 200
        bad = {"X-API-Key": "acme_api_AAAAAAAAAAAAAAAA"}
        codes = [api.http.get("/api/v1/pipelines/runs", headers=bad).status_code for _ in range(5)]
        assert codes == [401] * 5
        limited = api.http.get("/api/v1/pipelines/runs", headers=bad)
        assert limited.status_code == 429
        assert limited.json()["error"] == "too_many_auth_failures"
        assert int(limited.headers["Retry-After"]) >= 1
        # even a correct key waits while this client is being slowed down
        assert api.http.get("/api/v1/admin/bootstrap/status", headers=api.admin).status_code == 429
    finally:
        srv.stop()


def test_admin_routes_are_rate_limited(backend: Backend, tmp_path: Path) -> None:
    srv = backend.new_server(tmp_path / "srv", None, ADMIN_RATE_LIMIT="3")
    try:
        api = Api(srv)
        codes = [api.http.get("/api/v1/admin/bootstrap/status", headers=api.admin).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert api.http.get("/health").status_code == 200
    finally:
        srv.stop()
