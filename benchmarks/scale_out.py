"""Benchmark C: many orgs due in the same minute on several instances, against BigQuery's DML limits.

``cd /work/main && .venv/bin/python -m benchmarks.scale_out`` (300 orgs, 3 instances; long) or
``... -m benchmarks.scale_out --orgs 60`` (a few minutes). The same scenario as
``tests/acceptance/test_scale_out.py`` (issue 12, item 3), at a size given by ``--orgs``:

1. A local BigQuery emulator (``.venv-bq``) behind the BigQuery-limits proxy
   (``tests/bq_limits_proxy.py``: per table 2 mutating DML statements running and 20 queued, then
   BigQuery's ``resourcesExceeded``; INSERT limits; ``--latency`` seconds added to every statement).
2. ``--instances`` real service processes (``python -m src.app``, ``WAREHOUSE=bigquery``) on ONE
   project, each running ``--workers`` queue items at once; the central dataset bootstrapped once; a
   demo export of one day (``--rows`` rows) for the cost pipeline to load.
3. Set-up (not timed as part of the scenario, run without proxy latency): ``--orgs`` orgs onboarded,
   each with a daily ``gcp/cost/cost_billing`` schedule (window ``yesterday``) whose latest due time is
   the same minute.
4. The proxy's statistics are reset and its latency set; then **trigger** is called on every instance
   at once, and **process-queue** (``max_items`` = workers) on every instance, each in a loop, until
   no queue item is QUEUED, RUNNING or RETRY (``--timeout``).
5. Read back over HTTP: every due time's queue items and runs, each org's usage. Printed: wall times;
   the checks of the acceptance test (one COMPLETED run per due time, none duplicated or lost, usage =
   runs, no 5xx); statements by kind and table from the proxy (and per run); per-table peaks; limit
   errors the proxy raised and the retries seen (the same job sent again through the proxy = the
   client's retry; the services' log line ``transient warehouse error, retrying`` = our bounded
   retry); queueing delay per run (queue item created -> run started), slowest first.

Exit status 1 if a check failed (the figures are printed all the same). The emulator serializes
statements and runs BigQuery SQL on an embedded DuckDB: wall times show where a design waits on the
limits and on its own statement count, not BigQuery's speed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks._common import percentile, print_footer, print_header, print_table, proc_cpu_seconds
from tests.backends import BigQueryBackend, Seed
from tests.bq_limits_proxy import BigQueryLimitsProxy
from tests.bqemulator import BigQueryEmulator
from tests.instances import (
    Cluster,
    create_schedule,
    drain_queue,
    iter_items,
    just_passed_daily_cron,
    on_every_instance,
    queue_depth,
    runs_of,
    schedule_items,
    trigger,
    usage,
)

CENTRAL = ".organizations."  # the central dataset's tables: `project.organizations.table`
MUTATING = ("UPDATE", "DELETE", "MERGE")
RETRY_LINE = "transient warehouse error, retrying"


def parse_ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def short_table(table: str | None) -> str:
    """``dataset.table`` without the project; an org's dataset as ``<org>_local`` and a run's staging
    table as ``_snapshot_*``, so the statements of all orgs add up in one row."""
    if table is None:
        return "-"
    parts = table.split(".")
    if len(parts) != 3:
        return table
    dataset, name = parts[1], parts[2]
    if CENTRAL.strip(".") != dataset:
        dataset = "<org>_" + dataset.rsplit("_", 1)[-1]
        name = "_snapshot_*" if name.startswith("_snapshot_") else name
    return f"{dataset}.{name}"


# --- the scenario ---------------------------------------------------------------------------------
def set_up(cluster: Cluster, orgs: int, cron: str, instances: int) -> dict[str, tuple[str, str]]:
    """{slug: (key, schedule id)} — onboarded and scheduled, spread over the instances."""

    def one(n: int) -> tuple[str, tuple[str, str]]:
        api = cluster.apis[n % instances]
        slug = f"bench_scale_{n + 1}"
        key = api.onboard(slug)
        return slug, (key, create_schedule(api, slug, key, cron)["schedule_id"])

    with ThreadPoolExecutor(instances) as pool:
        return dict(pool.map(one, range(orgs)))


def read_back(cluster: Cluster, orgs: dict[str, tuple[str, str]], due: datetime) -> dict[str, Any]:
    """Each due time's items and runs, and each org's usage, read over HTTP (several at a time)."""
    window_day = str(due.date() - timedelta(days=1))

    def one(entry: tuple[int, tuple[str, tuple[str, str]]]) -> dict[str, Any]:
        n, (slug, (key, schedule_id)) = entry
        api = cluster.apis[n % len(cluster.apis)]
        items = schedule_items(api, slug, key, schedule_id)
        runs = runs_of(api, slug)
        report = usage(api, slug, key)
        problems = []
        if len(items) != 1 or parse_ts(items[0]["due_time"]) != due:
            problems.append(f"queue items for the due time: {len(items)} (want 1)")
        elif items[0]["state"] != "COMPLETED":
            problems.append(f"queue item {items[0]['state']}: {items[0]['last_error']}")
        if len(runs) != 1:
            problems.append(f"runs: {[(r['status'], r['error_message']) for r in runs]} (want one COMPLETED)")
        elif (runs[0]["status"], runs[0]["start_date"], runs[0]["end_date"]) != ("COMPLETED", window_day, window_day):
            problems.append(f"run {runs[0]['status']} {runs[0]['start_date']}: {runs[0]['error_message']}")
        counters = (report["today"]["runs"], report["month"]["runs"], report["concurrent"]["slots_in_use"])
        if counters != (len(runs), len(runs), 0) or report["concurrent"]["running"] != 0:
            problems.append(f"usage today/month/slots {counters}, running {report['concurrent']['running']}")
        delays = []
        for run in runs:
            item = next((i for i in items if i["queue_item_id"] == run["queue_item_id"]), None)
            created, started = parse_ts(item["created_at"]) if item else None, parse_ts(run.get("started_at"))
            if created and started:
                delays.append((started - created).total_seconds())
        return {"slug": slug, "problems": problems, "delays": delays, "runs": len(runs)}

    with ThreadPoolExecutor(2 * len(cluster.apis)) as pool:
        return {r["slug"]: r for r in pool.map(one, enumerate(orgs.items()))}


def service_retries(cluster: Cluster) -> Counter[str]:
    """Our bounded retries, from the services' JSON log lines, by what was retried."""
    found: Counter[str] = Counter()
    for server in cluster.servers:
        for line in server.log().splitlines():
            if RETRY_LINE not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                found["?"] += 1
                continue
            found[str(record.get("what") or record.get("extra", {}).get("what") or "?")] += 1
    return found


# --- the report -------------------------------------------------------------------------------------
def report(result: dict[str, Any], args: argparse.Namespace) -> bool:
    stats, checks = result["stats"], result["checks"]
    statements = [s for s in stats["statements"] if not s["dry_run"]]
    runs = sum(c["runs"] for c in checks.values())

    print("Wall time")
    timing = result["timing"]
    print_table(
        ["phase", "seconds"],
        [
            [f"set-up: {args.orgs} orgs onboarded + scheduled (no proxy latency)", f"{timing['setup']:.1f}"],
            [f"trigger on {args.instances} instances at once (slowest answer)", f"{timing['trigger']:.1f}"],
            ["process-queue on every instance until the queue is empty", f"{timing['drain']:.1f}"],
            ["trigger -> queue empty", f"{timing['trigger'] + timing['drain']:.1f}"],
        ],
    )
    cpu = result["cpu"]
    print(
        f"CPU seconds over trigger + process-queue: emulator {cpu['emulator']:.1f}, proxy {cpu['proxy']:.1f}, "
        f"services {' + '.join(f'{c:.1f}' for c in cpu['services'])}\n"
    )

    failed = {slug: c["problems"] for slug, c in checks.items() if c["problems"]}
    trigger_named = result["trigger_named"]
    five_xx = result["server_errors"]
    print("Checks (as tests/acceptance/test_scale_out.py)")
    print_table(
        ["check", "result"],
        [
            ["due times enqueued once (trigger answers)", f"{sum(1 for n in trigger_named.values() if n == 1)} of "
             f"{args.orgs} (twice or more: {sum(1 for n in trigger_named.values() if n > 1)}, "
             f"never: {args.orgs - len(trigger_named)}; trigger failed: {result['trigger_failed']})"],
            ["due times with one COMPLETED item and run, usage = runs", f"{args.orgs - len(failed)} of {args.orgs}"],
            ["runs in all", str(runs)],
            ["queue by state at the end", json.dumps(result["depth"])],
            ["5xx answers", str(len(five_xx))],
        ],
    )  # fmt: skip
    for slug, problems in list(failed.items())[:10]:
        print(f"  {slug}: {'; '.join(problems)}")
    if five_xx:
        print(f"  5xx: {five_xx[:5]}")
    print()

    print(f"Statements through the proxy during trigger + process-queue ({len(statements)} in all), by kind and table")
    by: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for s in statements:
        c = by[(s["kind"], short_table(s["table"]))]
        c["total"] += 1
        c[s["outcome"] or "in_flight"] += 1
    rows = [
        [kind, table, c["total"], f"{c['total'] / runs:.2f}" if runs else "-", c["admitted"], c["queued"],
         c["rejected"], c["injected"]]
        for (kind, table), c in sorted(by.items(), key=lambda item: (item[0][1], item[0][0]))
    ]  # fmt: skip
    print_table(["kind", "table", "total", "per run", "admitted", "queued", "rejected", "injected"], rows)
    central_mutating = [s for s in statements if s["kind"] in MUTATING and CENTRAL in (s["table"] or "")]
    per_run = len(central_mutating) / runs if runs else float("nan")
    print(
        f"Mutating statements on the central tables: {len(central_mutating)} ({per_run:.2f} per run; they include "
        "the trigger's and the queue's, and heartbeats)\n"
    )

    print("Per-table slots: peak running / peak queued (the limits: mutating 2 / 20, INSERT 10 / 100 after the")
    print("day's first 1,500); the org tables' row is the highest of any org's table")
    peak: dict[str, list[int]] = {}
    for table, slots in stats["tables"].items():
        row = peak.setdefault(short_table(table), [0, 0, 0, 0])
        for i, (cls, what) in enumerate(
            [
                ("mutating", "peak_running"),
                ("mutating", "peak_queued"),
                ("insert", "peak_running"),
                ("insert", "peak_queued"),
            ]
        ):
            row[i] = max(row[i], int(slots.get(cls, {}).get(what, 0)))
    print_table(
        ["table", "mutating", "insert"],
        [[t, f"{p[0]} / {p[1]}", f"{p[2]} / {p[3]}"] for t, p in sorted(peak.items()) if any(p)],
    )

    refused = [s for s in statements if s["outcome"] in ("rejected", "injected")]
    reasons = Counter((s["error_reason"], short_table(s["table"])) for s in refused)
    resent = Counter(s["job_id"] for s in statements if s["job_id"] and s["script_kind"] is None)
    client_retries = sum(n - 1 for n in resent.values() if n > 1)
    retries = result["service_retries"]
    print("Limit errors and retries")
    print_table(
        ["what", "count"],
        [
            *[[f"proxy refused: {reason} on {table}", n] for (reason, table), n in reasons.most_common()],
            ["proxy refused, in all", len(refused)],
            ["the client sent a job again (same job id)", client_retries],
            *[[f"service retry ({what})", n] for what, n in retries.most_common()],
            ["service retries, in all", sum(retries.values())],
        ],
    )

    delays = sorted(d for c in checks.values() for d in c["delays"])
    if delays:
        slowest = max(checks.values(), key=lambda c: max(c["delays"] or [0.0]))
        print("Queueing delay: queue item created -> run started")
        print_table(
            ["runs", "median s", "p95 s", "slowest s", "slowest org"],
            [[len(delays), f"{percentile(delays, 50):.1f}", f"{percentile(delays, 95):.1f}", f"{delays[-1]:.1f}",
              slowest["slug"]]],
        )  # fmt: skip
    ok = not failed and not five_xx and not result["trigger_failed"] and set(trigger_named.values()) == {1}
    ok = ok and len(trigger_named) == args.orgs
    print(f"checks: {'passed' if ok else 'FAILED'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description="Many orgs due in one minute on several instances (issue 12).")
    parser.add_argument("--orgs", type=int, default=300, help="orgs, each with one schedule due in the same minute")
    parser.add_argument("--instances", type=int, default=3, help="service processes on the one project")
    parser.add_argument("--workers", type=int, default=10, help="SCHEDULER_WORKERS: queue items per instance at once")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the proxy adds to every statement")
    parser.add_argument("--rows", type=int, default=20, help="rows of demo export for the window's one day")
    parser.add_argument("--timeout", type=float, default=3600.0, help="longest process-queue phase, seconds")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()

    print_header(f"Benchmark C: {args.orgs} orgs due in one minute on {args.instances} instances, BigQuery limits")
    print(
        f"emulator behind the limits proxy (2 running + 20 queued mutating DML per table), latency {args.latency} s "
        f"per statement; SCHEDULER_WORKERS={args.workers}, process-queue max_items={args.workers}; demo export "
        f"{args.rows} rows\n",
        flush=True,
    )
    cron, due = just_passed_daily_cron()
    env = {
        "SCHEDULER_WORKERS": str(args.workers),
        "SCHEDULER_PROCESS_MAX_ITEMS": str(max(100, args.workers)),
        "HEARTBEAT_SECONDS": "3",
        "RUN_LEASE_SECONDS": "300",
        "QUEUE_BACKOFF_BASE_SECONDS": "1",
        "QUEUE_BACKOFF_MAX_SECONDS": "8",
        "LOG_LEVEL": "INFO",
    }
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        emulator = BigQueryEmulator(root)
        emulator.start()
        proxy = BigQueryLimitsProxy(emulator.endpoint, root)
        proxy.start()
        cluster: Cluster | None = None
        try:
            backend = BigQueryBackend(proxy.endpoint, proxy=proxy, emulator_endpoint=emulator.endpoint)
            seed = Seed(due.date() - timedelta(days=1), 1, args.rows, include_late=False)
            print("  starting the instances ...", flush=True)
            cluster = Cluster.start(backend, root / "cluster", args.instances, seed, **env)
            print(f"  onboarding {args.orgs} orgs with their schedules ...", flush=True)
            t0 = time.perf_counter()
            orgs = set_up(cluster, args.orgs, cron, args.instances)
            setup = time.perf_counter() - t0

            proxy.reset()
            proxy.configure(latency=args.latency)
            assert emulator.proc is not None and proxy.proc is not None
            pids = [emulator.proc.pid, proxy.proc.pid, *(s.proc.pid for s in cluster.servers if s.proc)]
            cpu0 = [proc_cpu_seconds(p) for p in pids]
            print("  trigger on every instance at once ...", flush=True)
            t1 = time.perf_counter()
            answers = on_every_instance(cluster, trigger)
            t2 = time.perf_counter()
            print("  process-queue on every instance until the queue is empty ...", flush=True)
            drained = drain_queue(cluster, max_items=args.workers, timeout=args.timeout)
            t3 = time.perf_counter()
            cpu1 = [proc_cpu_seconds(p) for p in pids]
            proxy.configure(latency=0.0)
            stats = proxy.stats(project=cluster.project)
            stats["tables"] = {t: v for t, v in stats["tables"].items() if t.startswith(f"{cluster.project}.")}

            named: Counter[str] = Counter()
            trigger_failed = 0
            for answer in answers:
                if isinstance(answer, BaseException) or answer.status_code != 200:
                    trigger_failed += 1
                    continue
                body = answer.json()
                trigger_failed += int(body["failed"])
                named.update(i["schedule_id"] for i in body["items"])
            print("  reading back every due time's items, runs and usage ...\n", flush=True)
            result: dict[str, Any] = {
                "timing": {"setup": setup, "trigger": t2 - t1, "drain": t3 - t2},
                "cpu": {
                    "emulator": cpu1[0] - cpu0[0],
                    "proxy": cpu1[1] - cpu0[1],
                    "services": [b - a for a, b in zip(cpu0[2:], cpu1[2:], strict=True)],
                },
                "stats": stats,
                "checks": read_back(cluster, orgs, due),
                "trigger_named": dict(named),
                "trigger_failed": trigger_failed,
                "depth": queue_depth(cluster.apis[0]),
                "server_errors": [c.__dict__ for c in cluster.calls.server_errors()],
                "service_retries": service_retries(cluster),
                "process_queue_outcomes": dict(Counter(o["state"] for o in iter_items(drained))),
            }
        finally:
            if cluster is not None:
                cluster.stop()
            proxy.stop()
            emulator.stop()
    ok = report(result, args)
    print_footer()
    if args.json:
        result["stats"] = {k: v for k, v in result["stats"].items() if k != "statements"}
        args.json.write_text(json.dumps(result, indent=2, default=str))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
