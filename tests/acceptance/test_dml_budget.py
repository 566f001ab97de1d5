"""The DML budget, counted by the BigQuery-limits proxy: what each run, heartbeat, trigger and
queue claim sends to the central tables, by kind and table.

BigQuery runs 2 mutating DML statements (UPDATE, DELETE, MERGE) per table at a time and queues 20;
the rest fail. So the control plane is held to a budget (issue 12):

* a run: at most 3 mutating statements on the central tables from admission to end (admit and
  release on ``org_usage_quotas``, the final state on ``org_meta_pipeline_runs``); its run row,
  step logs and DQ results are INSERTs, one each;
* heartbeats: one statement per instance and interval, whatever the number of runs; none idle;
* no quota recount: an idle instance writes nothing;
* a trigger: one mutating statement for all the schedules it finds due; queue claims batched
  (one statement claims up to the free workers' worth of items), outcomes batched.

One dedicated BigQuery service (its own project on the shared emulator), the in-process scheduler
loop off. Every figure comes from the proxy's statement log, filtered to this project's tables.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.acceptance.test_scheduler import Gate, create_due, items, process, trigger, write_test_configs
from tests.backends import BigQueryBackend
from tests.conftest import DEMO, DEMO_END, unique_slug
from tests.server import Api, ServerProcess

pytestmark = pytest.mark.bigquery

MUTATING = {"UPDATE", "DELETE", "MERGE"}
HEARTBEAT = 1.0
KEY_TOUCH = 2.0  # keys' last use: one statement per instance and interval
HELD = ("held", "held_2", "held_3")
CENTRAL = "organizations"


@pytest.fixture(scope="module")
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def budget_server(
    bigquery_backend: BigQueryBackend, gate: Gate, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("dml-budget")
    configs = write_test_configs(tmp, gate)
    held = yaml.safe_load((configs / "testing/slow/held.yml").read_text())
    for name in HELD[1:]:  # more pipelines that wait on the gate, to hold several runs at once
        (configs / f"testing/slow/{name}.yml").write_text(yaml.safe_dump({**held, "pipeline_id": "{org_slug}_" + name}))
    srv = bigquery_backend.new_server(
        tmp / "srv",
        DEMO,
        CONFIGS_DIR=str(configs),
        SCHEDULER_LOOP_ENABLED="false",
        SCHEDULER_WORKERS="3",
        HEARTBEAT_SECONDS=str(HEARTBEAT),
        RUN_LEASE_SECONDS="4",  # the orphan sweep (every half lease) runs often: it must write nothing
        QUEUE_LEASE_SECONDS="30",
        KEY_TOUCH_INTERVAL_SECONDS=str(KEY_TOUCH),
    )
    assert Api(srv).bootstrap().status_code == 200
    yield srv
    srv.stop()


class Log:
    """The proxy's statements on this server's central tables since ``mark``."""

    def __init__(self, backend: BigQueryBackend, server: ServerProcess) -> None:
        self._proxy = backend.proxy
        self._prefix = f"{server.env['GCP_PROJECT_ID']}.{CENTRAL}."
        self._since = 0

    def _all(self) -> list[dict[str, Any]]:
        return list(self._proxy.stats()["statements"])

    def mark(self) -> None:
        self._since = max((r["seq"] for r in self._all()), default=0)

    def statements(self) -> list[dict[str, Any]]:
        return [
            {**r, "table": r["table"].removeprefix(self._prefix)}
            for r in self._all()
            if r["seq"] > self._since and (r["table"] or "").startswith(self._prefix)
        ]

    def counts(self, *, exclude_heartbeats: bool = True) -> Counter[tuple[str, str]]:
        return Counter(
            (r["kind"], r["table"])
            for r in self.statements()
            if r["kind"] != "SELECT" and not (exclude_heartbeats and is_heartbeat(r))
        )


def is_heartbeat(statement: dict[str, Any]) -> bool:
    """The instance's periodic statements, counted apart from a run's: heartbeats, keys' last use."""
    sql = statement["sql"] or ""
    return statement["kind"] == "UPDATE" and ("heartbeat_at = CURRENT_TIMESTAMP()" in sql or "last_used_at" in sql)


def mutating(counts: Counter[tuple[str, str]]) -> dict[tuple[str, str], int]:
    return {k: v for k, v in counts.items() if k[0] in MUTATING}


@pytest.fixture
def log(bigquery_backend: BigQueryBackend, budget_server: ServerProcess) -> Log:
    return Log(bigquery_backend, budget_server)


def test_a_run_costs_three_mutating_statements_and_appends_its_facts_once(
    budget_server: ServerProcess, log: Log
) -> None:
    api = Api(budget_server)
    slug = unique_slug("budget")
    key = api.onboard(slug)
    log.mark()
    run = api.run_and_wait(slug, key, {"date": DEMO_END.isoformat()})
    assert run["status"] == "COMPLETED", run
    assert run["steps"] and run["dq_results"]  # what the INSERTs below carried
    counts = log.counts()
    assert mutating(counts) == {
        ("UPDATE", "org_usage_quotas"): 2,  # admission, release
        ("UPDATE", "org_meta_pipeline_runs"): 1,  # the final state
    }, counts
    inserts = {table: n for (kind, table), n in counts.items() if kind == "INSERT"}
    assert inserts == {"org_meta_pipeline_runs": 1, "org_meta_step_logs": 1, "org_meta_dq_results": 1}, counts


def test_a_refused_run_costs_one_statement_and_consumes_nothing(budget_server: ServerProcess, log: Log) -> None:
    api = Api(budget_server)
    slug = unique_slug("budget_refused")
    key = api.onboard(slug, subscription_plan="TESTONEADAY")
    first = api.run(slug, key, {}, pipeline="testing/slow/held")  # holds the only concurrent slot
    assert first.status_code == 202, first.text
    log.mark()
    refused = api.run(slug, key, {}, pipeline="testing/noop/noop_0")
    assert refused.status_code == 429, refused.text
    assert mutating(log.counts()) == {("UPDATE", "org_usage_quotas"): 1}  # the guarded admission, refused
    usage = api.http.get(f"/api/v1/organizations/{slug}/usage", headers={"X-API-Key": key}).json()
    assert (usage["today"]["runs"], usage["concurrent"]["slots_in_use"]) == (1, 1)


def test_heartbeats_are_one_statement_per_interval_for_all_runs_and_an_idle_instance_writes_nothing(
    budget_server: ServerProcess, gate: Gate, log: Log
) -> None:
    api = Api(budget_server)
    slug = unique_slug("budget_beat")
    key = api.onboard(slug, subscription_plan="TESTQUEUE")
    gate.opened.clear()
    log.mark()
    started = time.monotonic()
    # Three runs held at once (pipelines of their own: no overlap), for several intervals.
    runs = [api.run(slug, key, {}, pipeline=f"testing/slow/{name}") for name in HELD]
    assert all(r.status_code == 202 for r in runs), [r.text for r in runs]
    time.sleep(5 * HEARTBEAT)
    periodic = [r for r in log.statements() if is_heartbeat(r)]
    beats = [r for r in periodic if "heartbeat_at" in r["sql"]]
    touches = [r for r in periodic if "last_used_at" in r["sql"]]
    elapsed = time.monotonic() - started
    gate.opened.set()
    for r in runs:
        assert api.wait(r.json()["pipeline_logging_id"], key)["status"] == "COMPLETED"
    # One statement per interval for the three runs, not one per run and interval; the same for keys.
    assert 3 <= len(beats) <= math.ceil(elapsed / HEARTBEAT) + 1, (len(beats), elapsed)
    assert 1 <= len(touches) <= math.ceil(elapsed / KEY_TOUCH) + 1, (len(touches), elapsed)

    # Idle now (once the last use of the key by the calls above is written): several heartbeat
    # intervals and orphan sweeps (RUN_LEASE_SECONDS=4) write nothing.
    time.sleep(KEY_TOUCH + 1)
    log.mark()
    time.sleep(5 * HEARTBEAT)
    writes = [r for r in log.statements() if r["kind"] != "SELECT"]
    assert writes == [], writes


def test_a_trigger_claims_every_due_schedule_in_one_statement_and_claims_are_batched(
    budget_server: ServerProcess, log: Log
) -> None:
    api = Api(budget_server)
    slug = unique_slug("budget_sched")
    key = api.onboard(slug, subscription_plan="TESTQUEUE")
    schedules = [create_due(api, slug, key, f"testing/noop/noop_{i}")["schedule_id"] for i in range(6)]
    log.mark()
    enqueued = trigger(api)
    assert {i["schedule_id"] for i in enqueued["items"]} >= set(schedules)
    assert log.counts() == Counter(
        {
            ("UPDATE", "org_pipeline_configs"): 1,  # the claim of every due schedule
            ("INSERT", "org_scheduled_pipeline_runs"): 1,
            ("INSERT", "org_pipeline_execution_queue"): 1,
        }
    ), log.counts()

    log.mark()
    started = time.monotonic()
    done = process(api, max_items=10)
    elapsed = time.monotonic() - started
    assert done["by_state"] == {"COMPLETED": 6}, done
    counts = log.counts()
    queue_updates = [
        r["sql"] or ""
        for r in log.statements()
        if r["kind"] == "UPDATE" and r["table"] == "org_pipeline_execution_queue"
    ]
    claims = [q for q in queue_updates if "attempts = IFNULL(attempts, 0) + 1" in q]
    renewals = [q for q in queue_updates if "SET lease_expires_at = @lease_until" in q]
    finishes = [q for q in queue_updates if "completed_at = IF(" in q]
    assert len(claims) + len(renewals) + len(finishes) == len(queue_updates), queue_updates
    # SCHEDULER_WORKERS=3: a claim for three, then one per freed worker at most.
    assert 2 <= len(claims) <= 5, counts
    # Leases: one UPDATE per lease/3 (QUEUE_LEASE_SECONDS=30) for everything held, not one per item.
    assert len(renewals) <= elapsed // 10 + 1, (len(renewals), elapsed)
    # Finishes: group-committed, never more than one statement per item.
    assert 1 <= len(finishes) <= 6, counts
    # Each run: admission + release + final state; the schedules and due times get nothing.
    assert counts[("UPDATE", "org_usage_quotas")] == 12 and counts[("UPDATE", "org_meta_pipeline_runs")] == 6, counts
    assert not any(t in {"org_pipeline_configs", "org_scheduled_pipeline_runs"} for (_, t) in mutating(counts)), counts
    for sid in schedules:
        assert [i["state"] for i in items(api, slug, key, sid)] == ["COMPLETED"]


def test_triggering_one_due_time_twice_at_once_enqueues_it_once(budget_server: ServerProcess) -> None:
    api = Api(budget_server)
    slug = unique_slug("budget_twice")
    key = api.onboard(slug, subscription_plan="TESTQUEUE")
    sid = create_due(api, slug, key, "testing/noop/noop_9")["schedule_id"]
    barrier = threading.Barrier(2)
    results: list[dict[str, Any]] = []

    def fire() -> None:
        barrier.wait()
        results.append(trigger(Api(budget_server)))

    threads = [threading.Thread(target=fire) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    mine = [i for r in results for i in r["items"] if i["schedule_id"] == sid]
    assert len(mine) == 1, results
    assert len(items(api, slug, key, sid)) == 1
