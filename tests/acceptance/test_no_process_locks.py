"""No guarantee rests on an in-process lock (issue 12, item 4).

Each test starts 3 service processes on one fresh BigQuery project (the emulator behind the limits
proxy, with latency per statement so that concurrent requests really overlap in the warehouse) and
sends the same request to all three at the same moment (one thread per process, released by a
barrier). A lock inside one process cannot serialize them: only the warehouse can. Black box: HTTP
only, outcomes read back through the API.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import httpx
import pytest

from tests.backends import Seed
from tests.conftest import DEMO_END, unique_slug
from tests.instances import (
    Cluster,
    StartCluster,
    at_once,
    create_schedule,
    drain_queue,
    just_passed_daily_cron,
    on_every_instance,
    queue_depth,
    runs_of,
    schedule_items,
    trigger,
    usage,
    values,
)
from tests.server import Api

pytestmark = [pytest.mark.bigquery, pytest.mark.slow]

INSTANCES = 3
LATENCY = 0.3  # seconds the proxy adds to every statement: admissions of concurrent requests overlap
SMALL_SEED = Seed(DEMO_END, 1, 20, include_late=False)  # a cost run with real rows, quickly


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def show(responses: list[httpx.Response]) -> str:
    return "\n".join(f"{r.status_code} {r.text[:300]}" for r in responses)


def no_server_errors(cluster: Cluster) -> None:
    errors = cluster.calls.server_errors()
    assert not errors, f"5xx answers: {errors}\n{cluster.logs()}"


def org_status(api: Api, slug: str, key: str) -> int:
    return api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": key}).status_code


# --- onboarding --------------------------------------------------------------------------------------


def test_one_slug_onboarded_on_three_instances_at_once_gives_one_201_and_one_working_key(
    start_cluster: StartCluster,
) -> None:
    cluster = start_cluster(INSTANCES)
    cluster.configure_proxy(latency=LATENCY)
    slug = unique_slug("race_onboard")
    body = {
        "org_slug": slug,
        "company_name": f"{slug} Inc",
        "admin_email": f"ops@{slug.replace('_', '-')}.example",
        "subscription_plan": "SCALE",
    }

    def onboard(api: Api) -> httpx.Response:
        return api.http.post("/api/v1/organizations/onboard", headers=api.admin, json=body)

    responses = values(on_every_instance(cluster, onboard))

    assert sorted(r.status_code for r in responses) == [201, 409, 409], show(responses)
    (winner,) = (r for r in responses if r.status_code == 201)
    for loser in (r for r in responses if r.status_code == 409):
        assert loser.json()["error"] == "org_exists", loser.text
        assert "api_key" not in loser.json()
    key = winner.json()["api_key"]
    for api in cluster.apis:  # the winner's key works on every instance
        response = api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": key})
        assert response.status_code == 200, response.text
        assert response.json()["org_slug"] == slug
    admin = cluster.apis[1]
    keys = admin.http.get(f"/api/v1/organizations/{slug}/api-keys", headers={"X-API-Key": key}).json()["keys"]
    assert [k["status"] for k in keys if k["status"] == "ACTIVE"] == ["ACTIVE"], keys  # one usable key
    listed = admin.http.get("/api/v1/admin/organizations", headers=admin.admin, params={"limit": 500}).json()
    assert [o["org_slug"] for o in listed["organizations"]].count(slug) == 1
    assert usage(admin, slug, key)["today"]["limit"] == 100  # one quota row, the SCALE plan's
    no_server_errors(cluster)


# --- run admission -----------------------------------------------------------------------------------


def test_overlapping_runs_of_one_org_on_three_instances_give_one_202_and_409s(start_cluster: StartCluster) -> None:
    cluster = start_cluster(INSTANCES, SMALL_SEED)
    slug = unique_slug("race_run")
    key = cluster.apis[0].onboard(slug)  # SCALE: 5 runs at once, so only the overlap may refuse
    cluster.configure_proxy(latency=LATENCY)  # a run takes seconds: the three requests overlap it
    day = SMALL_SEED.end_date.isoformat()

    responses = values(on_every_instance(cluster, lambda api: api.run(slug, key, {"date": day})))

    assert sorted(r.status_code for r in responses) == [202, 409, 409], show(responses)
    (accepted,) = (r for r in responses if r.status_code == 202)
    for refused in (r for r in responses if r.status_code == 409):
        assert refused.json()["error"] == "run_in_progress", refused.text
    run_id = accepted.json()["pipeline_logging_id"]
    finished = cluster.apis[2].wait(run_id, key, timeout=180)
    assert finished["status"] == "COMPLETED", finished
    runs = runs_of(cluster.apis[1], slug)
    assert [r["pipeline_logging_id"] for r in runs] == [run_id]  # the refused requests left no run
    report = usage(cluster.apis[0], slug, key)
    assert (report["today"]["runs"], report["month"]["runs"]) == (1, 1), report  # refusals cost nothing
    assert report["concurrent"] == {**report["concurrent"], "running": 0, "slots_in_use": 0}, report
    no_server_errors(cluster)


# --- key rotation ------------------------------------------------------------------------------------


def rotate(on: Sequence[Api], slug: str, key: str, grace: int) -> list[httpx.Response]:
    """Rotate ``key`` on each instance of ``on`` at the same moment; wait out the grace period."""
    path = f"/api/v1/organizations/{slug}/api-keys/rotate"
    body = {"grace_period_seconds": grace}
    responses = values(at_once([partial(api.http.post, path, headers={"X-API-Key": key}, json=body) for api in on]))
    ended = time.monotonic()
    assert all(r.status_code in (200, 409) for r in responses), show(responses)
    if grace:
        time.sleep(max(0.0, grace + 1 - (time.monotonic() - ended)))  # every superseded key's grace is over
    return responses


def the_one_working_key(cluster: Cluster, slug: str, calling: str, responses: list[httpx.Response]) -> str:
    """Exactly one key of the org works on every instance, one a 200 answer returned; the calling key
    and the other returned keys answer 401 everywhere; the key list shows that one key ACTIVE and not
    expiring. Returns it."""
    issued = {r.json()["api_key"]: r.json()["key_id"] for r in responses if r.status_code == 200}
    assert issued, f"no rotation succeeded:\n{show(responses)}"
    answers = {k: [org_status(api, slug, k) for api in cluster.apis] for k in [calling, *issued]}
    names = {calling: "the calling key", **{k: f"key {issued[k]} (a 200 answer)" for k in issued}}
    per_key = {names[k]: codes for k, codes in answers.items()}
    summary = f"{per_key}\n{show(responses)}"
    working = [k for k, codes in answers.items() if codes == [200] * INSTANCES]
    assert len(working) == 1, f"working keys after the rotations (HTTP status per instance): {summary}"
    (current,) = working
    assert current in issued, summary
    assert all(codes == [401] * INSTANCES for k, codes in answers.items() if k != current), summary
    keys = cluster.apis[1].http.get(f"/api/v1/organizations/{slug}/api-keys", headers={"X-API-Key": current})
    active = [(k["key_id"], k["expires_at"]) for k in keys.json()["keys"] if k["status"] == "ACTIVE"]
    assert active == [(issued[current], None)], keys.json()
    return current


@pytest.mark.parametrize("grace", [0, 3])
def test_concurrent_key_rotations_leave_exactly_one_working_key(start_cluster: StartCluster, grace: int) -> None:
    """What the API promises when one key is rotated on three instances at once: a rotation
    replaces that one named key, and of concurrent rotations of it exactly one answers 200 (its
    replacement, returned once) and the others 409 ``key_already_replaced`` (one guarded MERGE
    decides); none answers 5xx. The rotated key works for ``grace`` seconds and answers 401 after it
    (README, Keys). So once the grace period is over, exactly one key of the org works, on every
    instance: the one the 200 returned; the calling key answers 401; the org's key list shows that
    one key ACTIVE without an expiry. (Key caches are off, ``KEY_CACHE_TTL_SECONDS=0``: this is about
    the warehouse's state, not about the documented cache lifetime.) A single rotation is checked the
    same way first, so a failure of the concurrent ones is theirs, not the harness's."""
    cluster = start_cluster(INSTANCES, KEY_CACHE_TTL_SECONDS="0")
    slug = unique_slug("race_rotate")
    original = cluster.apis[0].onboard(slug)
    cluster.configure_proxy(latency=LATENCY)

    alone = rotate(cluster.apis[:1], slug, original, grace)
    assert [r.status_code for r in alone] == [200], show(alone)
    key = the_one_working_key(cluster, slug, original, alone)

    at_the_same_time = rotate(cluster.apis, slug, key, grace)
    codes = sorted(r.status_code for r in at_the_same_time)
    assert codes == [200] + [409] * (INSTANCES - 1), show(at_the_same_time)
    assert all(r.json()["error"] == "key_already_replaced" for r in at_the_same_time if r.status_code == 409)
    the_one_working_key(cluster, slug, key, at_the_same_time)
    no_server_errors(cluster)


# --- the trigger -------------------------------------------------------------------------------------


def test_one_due_time_triggered_on_three_instances_at_once_is_enqueued_once(start_cluster: StartCluster) -> None:
    cron, due = just_passed_daily_cron()
    yesterday = due.date() - timedelta(days=1)  # the schedule's window ("yesterday" of the due time)
    cluster = start_cluster(INSTANCES, Seed(yesterday, 1, 20, include_late=False))
    api = cluster.apis[0]
    slug = unique_slug("race_trigger")
    key = api.onboard(slug)
    schedule_id = create_schedule(api, slug, key, cron)["schedule_id"]
    cluster.configure_proxy(latency=LATENCY)

    responses = values(on_every_instance(cluster, trigger))

    assert [r.status_code for r in responses] == [200] * INSTANCES, show(responses)
    bodies: list[dict[str, Any]] = [r.json() for r in responses]
    assert sum(b["failed"] for b in bodies) == 0, bodies
    reported = [i for b in bodies for i in b["items"] if i["schedule_id"] == schedule_id]
    assert len(reported) == 1, f"the due time was reported enqueued {len(reported)} times: {bodies}"
    assert parse_ts(reported[0]["due_time"]) == due
    (item,) = schedule_items(cluster.apis[1], slug, key, schedule_id)
    assert (item["queue_item_id"], item["state"]) == (reported[0]["queue_item_id"], "QUEUED")
    assert parse_ts(item["due_time"]) == due
    depth = queue_depth(cluster.apis[2])
    assert (depth["QUEUED"], sum(depth.values())) == (1, 1), depth  # the project's whole queue
    schedule = api.http.get(f"/api/v1/organizations/{slug}/schedules/{schedule_id}", headers={"X-API-Key": key})
    assert parse_ts(schedule.json()["last_run_time"]) == due
    assert parse_ts(schedule.json()["next_run_time"]) == due + timedelta(days=1)

    # ... and that one item runs once, whichever instance claims it.
    drain_queue(cluster, max_items=5, timeout=180)
    runs = runs_of(cluster.apis[1], slug)
    assert [(r["queue_item_id"], r["status"]) for r in runs] == [(item["queue_item_id"], "COMPLETED")], runs
    assert str(yesterday) == runs[0]["start_date"] == runs[0]["end_date"]
    no_server_errors(cluster)
