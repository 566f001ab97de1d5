"""Scale-out proof (issue 12, item 3): 3 service processes, 30 orgs due in the same minute.

Three real service processes share one fresh BigQuery project (the emulator behind the limits proxy:
2 mutating DML statements running and 20 queued per table, then BigQuery's ``resourcesExceeded``
error; ``LATENCY`` seconds added to every statement, so concurrency in the warehouse is real). 30
orgs are onboarded, each with a daily ``gcp/cost/cost_billing`` schedule whose latest due time is the
same minute (the busiest minute of the day: 06:00 is popular). Then trigger is called on all three
instances at once, and process-queue on all three, each in a loop, until the queue holds nothing
QUEUED, RUNNING or RETRY. Each instance runs ``WORKERS`` queue items at once, so all 30 runs are in
flight together, as they would be at that minute.

What must hold (black box: read back over HTTP):

* each due time yields exactly one run, and it COMPLETED (its window is the due time's
  ``yesterday``): no queue item lost, none run twice, and no run failed (a failed run would mean a
  limit error reached a run instead of being absorbed by a bounded retry);
* each due time was enqueued once (trigger answers, the schedule's queue items, the queue's depth);
* usage counters equal the runs (1 today, 1 this month, no slot left in use);
* no request got a 5xx and no trigger reported a schedule it failed to enqueue;
* every limit error the proxy raised was absorbed: given the above, its list (proxy statistics)
  only decorates the failure messages.

The demo export is one day of 20 rows (the smallest that still loads, reconciles and writes rows).
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.backends import Seed
from tests.conftest import unique_slug
from tests.instances import (
    Cluster,
    StartCluster,
    create_schedule,
    describe,
    drain_queue,
    iter_items,
    just_passed_daily_cron,
    limit_errors,
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
ORGS = 30
WORKERS = 10  # queue items each instance runs at once: 3 x 10 = all 30 due runs in flight together
LATENCY = 0.2  # seconds the proxy adds to every statement (real DML takes about a second)
DRAIN_TIMEOUT = 480  # seconds; ~130 s on main on a busy 2-core machine (2026-12-01)
ENV = {
    "SCHEDULER_WORKERS": str(WORKERS),
    "HEARTBEAT_SECONDS": "3",  # several heartbeats per run (production: 30 s for runs of minutes)
    "RUN_LEASE_SECONDS": "300",  # the default: a run is "owner lost" after 5 minutes without a heartbeat
    "QUEUE_BACKOFF_BASE_SECONDS": "1",  # a retried item comes back within the test's time
    "QUEUE_BACKOFF_MAX_SECONDS": "4",
}


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def onboard_with_schedules(cluster: Cluster, cron: str) -> dict[str, tuple[str, str]]:
    """ORGS orgs, each with one due schedule, spread over the instances: {slug: (key, schedule id)}."""

    def one(n: int) -> tuple[str, tuple[str, str]]:
        api = cluster.apis[n % INSTANCES]
        slug = unique_slug("scale")
        key = api.onboard(slug)
        return slug, (key, create_schedule(api, slug, key, cron)["schedule_id"])

    with ThreadPoolExecutor(INSTANCES) as pool:
        return dict(pool.map(one, range(ORGS)))


def due_time_problems(api: Api, slug: str, key: str, schedule_id: str, due: datetime) -> list[str]:
    """What is wrong with one due time's outcome (nothing: one COMPLETED queue item, one COMPLETED run
    of the due time's window made by it, usage counters equal to that one run)."""
    window_day = str(due.date() - timedelta(days=1))  # "yesterday" of the due time
    problems = []
    items = schedule_items(api, slug, key, schedule_id)
    if len(items) != 1 or parse_ts(items[0]["due_time"]) != due:
        problems.append(
            f"{len(items)} queue items: {[(i['due_time'], i['state']) for i in items]} (lost or duplicated)"
        )
    elif items[0]["state"] != "COMPLETED":
        problems.append(f"its queue item ended {items[0]['state']}: {items[0]['last_error']}")
    runs = runs_of(api, slug)
    if len(runs) != 1:
        problems.append(f"{len(runs)} runs: {[(r['status'], r['error_message']) for r in runs]} (want one COMPLETED)")
    else:
        (run,) = runs
        fields = ("status", "trigger_by", "schedule_id", "start_date", "end_date")
        got = tuple(run[k] for k in fields)
        if got != ("COMPLETED", "scheduler", schedule_id, window_day, window_day):
            problems.append(f"run {dict(zip(fields, got, strict=True))}: {run['error_message']}")
        if items and run["queue_item_id"] != items[0]["queue_item_id"]:
            problems.append(f"the run belongs to queue item {run['queue_item_id']}, not {items[0]['queue_item_id']}")
    report = usage(api, slug, key)
    counters = (report["today"]["runs"], report["month"]["runs"])
    slots = (report["concurrent"]["running"], report["concurrent"]["slots_in_use"])
    if counters != (len(runs), len(runs)) or slots != (0, 0):
        problems.append(f"usage runs today/month {counters}, running/slots {slots} for {len(runs)} run(s)")
    return problems


def test_thirty_orgs_due_in_one_minute_on_three_instances(start_cluster: StartCluster) -> None:
    cron, due = just_passed_daily_cron()
    cluster = start_cluster(INSTANCES, Seed(due.date() - timedelta(days=1), 1, 20, include_late=False), **ENV)
    orgs = onboard_with_schedules(cluster, cron)
    schedule_ids = {sid: slug for slug, (_, sid) in orgs.items()}
    cluster.configure_proxy(latency=LATENCY)
    started = datetime.now(UTC)

    # All three instances trigger at the same moment.
    triggered = values(on_every_instance(cluster, trigger))
    assert [r.status_code for r in triggered] == [200] * INSTANCES, [r.text[:500] for r in triggered]
    bodies: list[dict[str, Any]] = [r.json() for r in triggered]
    assert [b["failed"] for b in bodies] == [0] * INSTANCES, f"schedules not enqueued: {bodies}"
    enqueued = Counter(i["schedule_id"] for b in bodies for i in b["items"])
    if enqueued != Counter(list(schedule_ids)):
        depth = queue_depth(cluster.apis[0])
        never = [schedule_ids[s] for s in schedule_ids if s not in enqueued]
        raise AssertionError(
            f"trigger answers name {len(enqueued)} due times ({sum(enqueued.values())} times), not each of the "
            f"{ORGS} once; not named: {never[:5]}…; twice: {[s for s, n in enqueued.items() if n > 1]}; "
            f"queue by state: {depth}; answers: {[{k: b[k] for k in ('due', 'enqueued', 'failed')} for b in bodies]}"
        )

    # Then all three work the queue until it is empty.
    answers = drain_queue(cluster, max_items=WORKERS, timeout=DRAIN_TIMEOUT)
    elapsed = (datetime.now(UTC) - started).total_seconds()

    stats = cluster.stats()
    refused = limit_errors(stats)
    context = (
        f"after {elapsed:.0f} s; {len(refused)} statements refused by the proxy:\n{describe(refused)}\n"
        f"process-queue outcomes: {Counter(o['state'] for o in iter_items(answers))}"
    )
    bad_answers = [a for a in answers if "status" in a]
    assert not bad_answers, f"process-queue answered an error: {bad_answers}\n{context}"
    cluster.restore_proxy()  # reading back needs no latency

    def check(entry: tuple[int, tuple[str, tuple[str, str]]]) -> tuple[str, list[str]]:
        n, (slug, (key, schedule_id)) = entry
        return slug, due_time_problems(cluster.apis[n % INSTANCES], slug, key, schedule_id, due)

    with ThreadPoolExecutor(INSTANCES) as pool:
        problems = {slug: found for slug, found in pool.map(check, enumerate(orgs.items())) if found}
    listed = "\n".join(f"{slug}: {'; '.join(found)}" for slug, found in list(problems.items())[:8])
    assert not problems, f"{len(problems)} of {ORGS} due times went wrong:\n{listed}\n{context}"
    depth = queue_depth(cluster.apis[0])
    assert depth["COMPLETED"] == ORGS and sum(depth.values()) == ORGS, f"queue by state: {depth}\n{context}"
    server_errors = cluster.calls.server_errors()
    assert not server_errors, f"5xx answers: {server_errors[:5]}\n{context}"

    # The harness really met the limits: the central tables saw statements running side by side.
    central = [t for t in stats["tables"] if ".organizations." in t]
    peak = max((v.get("mutating", {}).get("peak_running", 0) for t, v in stats["tables"].items() if t in central))
    assert peak == 2, f"no central table ever had 2 mutating statements running: {stats['tables']}"
