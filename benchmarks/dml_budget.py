"""Benchmark D: the control plane's statements on the central tables, counted by the BigQuery-limits proxy.

``cd /work/main && .venv/bin/python -m benchmarks.dml_budget [--orgs 10] [--repo PATH]``

Starts the local BigQuery emulator behind ``tests/bq_limits_proxy.py`` and one service (``WAREHOUSE=
bigquery``; ``--repo``: the service of another checkout, e.g. a worktree of an older commit, to count
"before" — its own ``src`` and ``configs``), bootstraps it, onboards ``--orgs`` orgs and counts, by kind
(UPDATE, DELETE, MERGE: mutating; INSERT; SELECT) and central table:

1. **one run**: a manual ``gcp/cost/cost_billing`` run of one day, from the POST to its final state
   (heartbeats counted apart);
2. **schedules**: every org with a schedule due in the same minute; one trigger, then process-queue
   until the queue is empty — statements per trigger, and per scheduled run;
3. **idle**: ``--idle`` seconds with nothing to do (heartbeat every second, orphan sweep every half
   lease): writes while idle.

The figures are the statements the service sent, whatever the emulator's speed; the proxy adds no
latency here. Prints one table per phase and the jobs per run.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks._common import print_footer, print_header, print_table
from tests.backends import BigQueryBackend, Seed, _seed_with
from tests.bq_limits_proxy import BigQueryLimitsProxy
from tests.bqemulator import BigQueryEmulator
from tests.server import REPO, Api, ServerProcess

MUTATING = ("UPDATE", "DELETE", "MERGE")
DAY = datetime(2026, 11, 20, tzinfo=UTC).date()


class Counted:
    def __init__(self, proxy: BigQueryLimitsProxy, project: str) -> None:
        self._proxy = proxy
        self._prefix = f"{project}.organizations."
        self._since = 0

    def mark(self) -> None:
        self._since = max((r["seq"] for r in self._proxy.stats()["statements"]), default=0)

    def statements(self) -> list[dict[str, Any]]:
        rows = []
        for r in self._proxy.stats()["statements"]:
            if r["seq"] <= self._since:
                continue
            table = r["table"] or ""
            central = table.startswith(self._prefix)
            rows.append({**r, "central": central, "short": table.removeprefix(self._prefix) if central else table})
        return rows


def heartbeat(r: dict[str, Any]) -> bool:
    return r["kind"] == "UPDATE" and "heartbeat_at = CURRENT_TIMESTAMP()" in (r["sql"] or "")


def summarize(title: str, rows: list[dict[str, Any]], per: int = 1) -> None:
    counts = Counter((r["kind"], r["short"] or "-") for r in rows if r["central"] and not heartbeat(r))
    table = [
        (kind, name, n, f"{n / per:.2f}")
        for (kind, name), n in sorted(counts.items(), key=lambda kv: (kv[0][0] not in MUTATING, kv[0]))
    ]
    print(f"\n{title}")
    print_table(("kind", "central table", "statements", f"per {'run' if per > 1 else 'phase'}"), table)
    mutating = sum(n for (kind, _), n in counts.items() if kind in MUTATING)
    beats = sum(1 for r in rows if heartbeat(r))
    jobs = len(rows)
    print(f"mutating on central tables: {mutating} ({mutating / per:.2f} per run); heartbeats: {beats}; "
          f"all jobs (any table, reads included): {jobs} ({jobs / per:.1f} per run)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=10)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose service runs")
    args = parser.parse_args()
    print_header("D: control-plane statements on the central tables (BigQuery-limits proxy)")
    print(f"service from: {args.repo}")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        emulator = BigQueryEmulator(tmp)
        emulator.start()
        proxy = BigQueryLimitsProxy(emulator.endpoint, tmp)
        proxy.start()
        backend = BigQueryBackend(proxy.endpoint, proxy=proxy, emulator_endpoint=emulator.endpoint)
        project = "bench-dml"
        asyncio.run(_seed_with(backend._warehouse(project), Seed(DAY, 1, 200)))
        env = {
            **backend.env(project),
            "SCHEDULER_LOOP_ENABLED": "false",
            "HEARTBEAT_SECONDS": "1",
            "RUN_LEASE_SECONDS": "10",
            "SCHEDULER_WORKERS": "4",
            # Production's default (the test harness writes a key's last use at once, 0 s): one UPDATE
            # per instance per 5 minutes for all the keys it saw.
            "KEY_TOUCH_INTERVAL_SECONDS": "300",
        }
        server = ServerProcess(tmp / "srv", env, repo=args.repo)
        (tmp / "srv").mkdir()
        server.start(timeout=90)
        try:
            api = Api(server)
            assert api.bootstrap().status_code == 200
            keys = {f"bench_{i}": api.onboard(f"bench_{i}", subscription_plan="SCALE") for i in range(args.orgs)}
            counted = Counted(proxy, project)

            slug, key = next(iter(keys.items()))
            counted.mark()
            run = api.run_and_wait(slug, key, {"date": DAY.isoformat()})
            assert run["status"] == "COMPLETED", run
            summarize("1. one manual run (POST to final state)", counted.statements())

            minute = (datetime.now(UTC) - timedelta(minutes=2)).replace(second=0, microsecond=0)
            for slug, key in keys.items():
                response = api.http.post(
                    f"/api/v1/organizations/{slug}/schedules",
                    headers={"X-API-Key": key},
                    json={
                        "pipeline": "gcp/cost/cost_billing",
                        "cron_expression": f"{minute.minute} {minute.hour} * * *",
                        "timezone": "UTC",
                        "parameters": {"window": "yesterday"},
                        "starts_at": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
                    },
                )
                assert response.status_code == 201, response.text
            counted.mark()
            started = time.monotonic()
            triggered = api.http.post("/api/v1/scheduler/trigger", headers=api.admin, timeout=300).json()
            after_trigger = counted.statements()
            summarize(f"2a. one trigger ({triggered['enqueued']} due schedules)", after_trigger)
            counted.mark()
            processed = 0
            while processed < args.orgs:
                answer = api.http.post(
                    "/api/v1/scheduler/process-queue", headers=api.admin, json={"max_items": 100}, timeout=900
                ).json()
                if not answer["processed"]:
                    break
                processed += answer["processed"]
            wall = time.monotonic() - started
            summarize(f"2b. process-queue until empty ({processed} scheduled runs, {wall:.1f} s)",
                      counted.statements(), per=max(processed, 1))  # fmt: skip

            time.sleep(1.5)
            counted.mark()
            time.sleep(args.idle)
            idle = [r for r in counted.statements() if r["kind"] != "SELECT"]
            reads = [r for r in counted.statements() if r["kind"] == "SELECT"]
            print(f"\n3. idle {args.idle:g} s: {len(idle)} writes, {len(reads)} reads")
        finally:
            server.stop()
            proxy.stop()
            emulator.stop()
    print_footer()


if __name__ == "__main__":
    main()
