"""Benchmark B: the cost_billing pipeline against the same load written by hand in DuckDB.

``cd /work/main && .venv/bin/python -m benchmarks.etl_cost_billing`` (sizes 100k and 1M rows, a
few minutes). For each size N:

1. a fresh process writes N rows of demo billing export for ONE day into a DuckDB file
   (``seed_demo_billing``: generator + NDJSON load job, no late corrections, so exactly N rows);
2. **pipeline**: the real service (``python -m src.app``, default settings: DuckDB memory_limit
   2GB, 2 threads) on a fresh copy of that file; bootstrap, onboard, ``POST`` a run of
   ``gcp/cost/cost_billing`` for that day and wait until it is done. Timed from the POST to
   completion (seen in the service's log, see ``_wait_for_run``); the step's ``duration_ms`` from
   the run's step log and the service's CPU-seconds are shown too. Peak RSS is the service's
   ``VmHWM`` before the run (after bootstrap + onboarding) and after it;
3. **raw**: a fresh process per attempt opens a fresh copy of the file exactly as the backend does
   (in-memory database + ATTACH under the project id, same memory_limit/threads, UTC) and times
   the hand-written DuckDB ``INSERT … SELECT`` of the same columns into an empty table with the
   destination's schema (``configs/gcp/bq_etl/schema_template.json: billing_cost``). Two filters
   are tried (``CAST(ts AS DATE) BETWEEN`` and a timestamp range); the one with the lower median
   is the baseline. Peak RSS is that process's own ``VmHWM``.

Steps 2 and 3 are repeated ``--repeats`` times, interleaved, and medians are compared (the machine
may be shared; the CPU-seconds ratio is shown as a check that is less sensitive to that).
Targets: pipeline time / raw time <= 1.25; peak RSS that does not grow with the row count.
Internal worker modes (``--worker seed|raw``) are used by the script itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from benchmarks._common import (
    REPO,
    Server,
    bootstrap,
    mib,
    onboard,
    print_footer,
    print_header,
    print_table,
    proc_cpu_seconds,
    proc_status_kib,
    run_json,
)

RATIO_TARGET = 1.25
DEFAULT_DAY = date(2026, 11, 20)
ORG = "bench_etl"

# The pipeline's source query (configs/gcp/cost/cost_billing.yml), written the DuckDB way:
# credits summed with list functions, JSON columns with to_json(...)::VARCHAR.
RAW_SELECT = """
SELECT
  CAST(b.usage_start_time AS DATE) AS usage_date,
  b.billing_account_id,
  b.service.id, b.service.description,
  b.sku.id, b.sku.description,
  b.usage_start_time, b.usage_end_time,
  b.project.id, b.project.number, b.project.name, b.project.ancestry_numbers,
  to_json(b.project.labels)::VARCHAR, to_json(b.labels)::VARCHAR,
  to_json(b.system_labels)::VARCHAR, to_json(b.tags)::VARCHAR,
  b.location.location, b.location.country, b.location.region, b.location.zone,
  b.transaction_type, b.seller_name,
  b.cost,
  coalesce(list_sum(list_transform(b.credits, c -> c.amount)), 0),
  b.cost + coalesce(list_sum(list_transform(b.credits, c -> c.amount)), 0),
  to_json(b.credits)::VARCHAR,
  b.currency, b.currency_conversion_rate, b.cost_at_list,
  b.usage.amount, b.usage.unit, b.usage.amount_in_pricing_units, b.usage.pricing_unit,
  b.invoice.month, b.invoice.publisher_type,
  b.cost_type,
  b.adjustment_info.id, b.adjustment_info.description, b.adjustment_info.mode, b.adjustment_info.type,
  b.export_time,
  $org_slug, $pipeline_logging_id, current_timestamp
FROM {source} AS b
"""
RAW_FILTERS = {
    "cast": "WHERE CAST(b.usage_start_time AS DATE) BETWEEN $start_date AND $end_date",
    "range": "WHERE b.usage_start_time >= $start_date::TIMESTAMPTZ "
    "AND b.usage_start_time < ($end_date + 1)::TIMESTAMPTZ",
}


def _project() -> str:
    from src.app.config import Settings

    return str(Settings.model_fields["gcp_project_id"].default)


def _duckdb_defaults() -> tuple[str, int]:
    """The service's DuckDB memory_limit and threads (its Settings defaults, or DUCKDB_MEMORY_LIMIT)."""
    from src.app.config import Settings

    fields = Settings.model_fields
    memory_limit = os.environ.get("DUCKDB_MEMORY_LIMIT") or str(fields["duckdb_memory_limit"].default)
    return memory_limit, int(fields["duckdb_threads"].default)


# --- workers (fresh processes) -----------------------------------------------------------------
async def _seed(db: Path, rows: int, day: date) -> dict[str, Any]:
    from src.core.demo.seed import seed_demo_billing
    from src.core.engine.duckdb_backend import DuckDBWarehouse

    memory_limit, threads = _duckdb_defaults()
    wh = DuckDBWarehouse(path=db, project=_project(), memory_limit=memory_limit, threads=threads)
    await wh.start()
    started = time.perf_counter()
    try:
        result = await seed_demo_billing(
            wh, REPO / "configs", end_date=day, days=1, rows_per_day=rows, include_late=False
        )
    finally:
        await wh.close()
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def _raw(db: Path, rows: int, day: date, variant: str) -> dict[str, Any]:
    import duckdb

    from src.core.demo.billing_export import export_table_name
    from src.core.demo.seed import DATASET
    from src.core.processors.gcp.bq_etl import schema_templates

    project = _project()
    memory_limit, threads = _duckdb_defaults()
    hwm_start = _self_kib("VmHWM")
    con = duckdb.connect(
        ":memory:",
        config={
            "memory_limit": memory_limit,
            "threads": threads,
            "temp_directory": str(db.with_suffix(".tmp")),
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        },
    )
    con.execute(f"ATTACH '{db}' AS \"{project}\"")
    con.execute("SET TimeZone = 'UTC'")
    schema = schema_templates(REPO / "configs")["billing_cost"]
    columns = ", ".join(f'"{f.name}" {f.duckdb_type()}' + (" NOT NULL" if f.mode == "REQUIRED" else "") for f in schema)
    con.execute(f'CREATE SCHEMA "{project}".bench')
    con.execute(f'CREATE TABLE "{project}".bench.dest ({columns})')
    source = f'"{project}"."{DATASET}"."{export_table_name()}"'
    sql = f'INSERT INTO "{project}".bench.dest ' + RAW_SELECT.format(source=source) + RAW_FILTERS[variant]
    params = {"org_slug": ORG, "pipeline_logging_id": "raw-baseline", "start_date": day, "end_date": day}
    hwm_before = _self_kib("VmHWM")
    cpu0, started = os.times(), time.perf_counter()
    (inserted,) = con.execute(sql, params).fetchone() or (0,)
    seconds = time.perf_counter() - started
    cpu1 = os.times()
    hwm_after = _self_kib("VmHWM")
    (count,) = con.execute(f'SELECT count(*) FROM "{project}".bench.dest').fetchone() or (0,)
    con.close()
    if count != rows or inserted != rows:
        raise SystemExit(f"raw load wrote {inserted}/{count} rows, expected {rows}")
    return {
        "variant": variant,
        "seconds": seconds,
        "cpu_seconds": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "rows": int(count),
        "hwm_start_kib": hwm_start,
        "hwm_before_kib": hwm_before,
        "hwm_kib": hwm_after,
    }


def _self_kib(field: str) -> int:
    return proc_status_kib(os.getpid(), field)


# --- the pipeline over HTTP --------------------------------------------------------------------
def _wait_for_run(server: Server, http: Any, run_id: str, headers: dict[str, str], started: float) -> tuple[float, int]:
    """Seconds from ``started`` until the run is done, and the HTTP polls spent.

    Polling ``GET /runs/{id}`` costs the service a few queries each time, on the same two cores
    as the load, so completion is seen in the service's log instead (its ``run finished`` line
    carries the run id; the file is read every 10 ms, no load on the service), with an HTTP poll
    every 2 s as a fallback should that line ever change.
    """
    offset, polls, next_poll = 0, 0, started + 2.0
    while True:
        time.sleep(0.01)
        with server.log_path.open("rb") as log:
            log.seek(offset)
            chunk = log.read()
        cut = chunk.rfind(b"\n") + 1
        offset += cut
        for line in chunk[:cut].splitlines():
            if run_id.encode() in line and (b'"run finished"' in line or b'"run crashed"' in line):
                return time.perf_counter() - started, polls
        if time.perf_counter() >= next_poll:
            polls += 1
            status = http.get(f"/api/v1/pipelines/runs/{run_id}", headers=headers).json()["status"]
            if status in {"COMPLETED", "FAILED", "CANCELLED"}:
                return time.perf_counter() - started, polls
            next_poll = time.perf_counter() + 2.0


def _pipeline(template: Path, data_dir: Path, rows: int, day: date) -> dict[str, Any]:
    """A fresh service on a fresh copy of the seeded file: bootstrap, onboard, one run of the day."""
    data_dir.mkdir(parents=True)
    shutil.copy(template, data_dir / "warehouse.duckdb")
    server = Server.service(data_dir, env={"DUCKDB_MEMORY_LIMIT": _duckdb_defaults()[0]})
    server.start()
    try:
        with server.client() as http:
            bootstrap(http)
            key = onboard(http, ORG)
            headers = {"X-API-Key": key}
            hwm_before = proc_status_kib(server.pid, "VmHWM")
            cpu0 = proc_cpu_seconds(server.pid)
            started = time.perf_counter()
            response = http.post(
                f"/api/v1/pipelines/run/{ORG}/gcp/cost/cost_billing", headers=headers, json={"date": day.isoformat()}
            )
            if response.status_code != 202:
                raise RuntimeError(f"run: {response.status_code} {response.text}")
            run_id = response.json()["pipeline_logging_id"]
            seconds, polls = _wait_for_run(server, http, run_id, headers, started)
            cpu = proc_cpu_seconds(server.pid) - cpu0
            run = http.get(f"/api/v1/pipelines/runs/{run_id}", headers=headers).json()
            hwm_after = proc_status_kib(server.pid, "VmHWM")
            rss_after = proc_status_kib(server.pid, "VmRSS")
    finally:
        server.stop()
    if run["status"] != "COMPLETED":
        raise RuntimeError(f"run {run_id} {run['status']}: {json.dumps(run, default=str)[:2000]}")
    step = run["steps"][0]
    processed = int(step.get("rows_processed") or 0)
    if processed != rows:
        raise RuntimeError(f"pipeline processed {processed} rows, expected {rows}")
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "step_ms": step.get("duration_ms"),
        "run_ms": run.get("duration_ms"),
        "polls": polls,
        "rows": processed,
        "hwm_before_kib": hwm_before,
        "hwm_kib": hwm_after,
        "rss_after_kib": rss_after,
        "dq_passed": all(d["passed"] for d in run.get("dq_results", [])),
    }


def _size(args: argparse.Namespace, rows: int, root: Path) -> dict[str, Any]:
    """Seed once; then, interleaved, ``--repeats`` pipeline runs and raw attempts per filter."""
    work = root / f"rows-{rows}"
    work.mkdir()
    template = work / "template.duckdb"
    me = [sys.executable, "-m", "benchmarks.etl_cost_billing"]
    day = args.day.isoformat()
    print(f"  {rows:,} rows: seeding ...", flush=True)
    seeded = run_json([*me, "--worker", "seed", "--db", str(template), "--rows", str(rows), "--day", day], timeout=1800)
    pipelines: list[dict[str, Any]] = []
    raws: list[dict[str, Any]] = []
    for attempt in range(1, args.repeats + 1):
        print(f"  {rows:,} rows, attempt {attempt}: pipeline over HTTP ...", flush=True)
        pipelines.append(_pipeline(template, work / f"service-{attempt}", rows, args.day))
        shutil.rmtree(work / f"service-{attempt}")
        for variant in RAW_FILTERS:
            print(f"  {rows:,} rows, attempt {attempt}: raw DuckDB ({variant}) ...", flush=True)
            db = work / f"raw-{variant}-{attempt}.duckdb"
            shutil.copy(template, db)
            argv = [*me, "--worker", "raw", "--db", str(db), "--rows", str(rows), "--day", day, "--variant", variant]
            raws.append(run_json(argv, timeout=1800))
            db.unlink()
    shutil.rmtree(work)
    return {"rows": rows, "seed": seeded, "pipeline": pipelines, "raw": raws}


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _report(results: list[dict[str, Any]]) -> None:
    timing: list[list[Any]] = []
    memory: list[list[Any]] = []
    for r in results:
        rows, runs = r["rows"], r["pipeline"]
        p_med = _median([x["seconds"] for x in runs])
        step_med = _median([x["step_ms"] / 1000 for x in runs])
        p_cpu = _median([x["cpu_seconds"] for x in runs])
        by_variant = {v: [x for x in r["raw"] if x["variant"] == v] for v in RAW_FILTERS}
        variant = min(by_variant, key=lambda v: _median([x["seconds"] for x in by_variant[v]]))
        raw = by_variant[variant]
        raw_med = _median([x["seconds"] for x in raw])
        raw_cpu = _median([x["cpu_seconds"] for x in raw])
        best_ratio = min(x["seconds"] for x in runs) / min(x["seconds"] for x in raw)
        ratio = p_med / raw_med
        timing.append(
            [
                f"{rows:,}",
                f"{p_med:.2f} s",
                f"{rows / p_med:,.0f}",
                f"{step_med:.2f} s",
                f"{raw_med:.2f} s ({variant})",
                f"{rows / raw_med:,.0f}",
                f"{ratio:.2f}",
                f"{step_med / raw_med:.2f}",
                f"{best_ratio:.2f}",
                f"{p_cpu / raw_cpu:.2f}",
                "MET" if ratio <= RATIO_TARGET else "MISSED",
            ]
        )
        memory.append(
            [
                f"{rows:,}",
                mib(max(x["hwm_before_kib"] for x in runs)),
                mib(max(x["hwm_kib"] for x in runs)),
                mib(max(x["rss_after_kib"] for x in runs)),
                mib(max(x["hwm_before_kib"] for x in r["raw"])),
                mib(max(x["hwm_kib"] for x in r["raw"])),
            ]
        )
    n = len(results[0]["pipeline"])
    print(f"Time, medians of {n} attempts. pipeline: POST -> COMPLETED over HTTP; step: the step's duration_ms")
    print("from the run's step log; raw: the INSERT ... SELECT alone, the filter variant with the lower median.")
    print("best/best: fastest pipeline over fastest raw. CPU: service CPU-seconds during the run over the raw")
    print("process's CPU-seconds of its INSERT (both medians; less sensitive to other load on the machine).")
    print_table(
        [
            "rows",
            "pipeline",
            "pipeline rows/s",
            "step",
            "raw",
            "raw rows/s",
            "pipeline/raw",
            "step/raw",
            "best/best",
            "CPU pipeline/raw",
            "target <= 1.25",
        ],
        timing,
    )
    print("Peak RSS (VmHWM, max over attempts). Service: after bootstrap + onboarding (before the run) and")
    print("after the run. Raw: the fresh process before its INSERT (imports + ATTACH) and after it.")
    print_table(
        ["rows", "service before run", "service peak", "service RSS after", "raw before insert", "raw peak"],
        memory,
    )
    print("All attempts")
    detail: list[list[Any]] = []
    for r in results:
        for i, x in enumerate(r["pipeline"], 1):
            detail.append(
                [
                    f"{r['rows']:,}",
                    f"pipeline #{i}",
                    f"{x['seconds']:.2f}",
                    f"{x['cpu_seconds']:.2f}",
                    f"step {x['step_ms']} ms, run {x['run_ms']} ms, {x['polls']} polls",
                    mib(x["hwm_kib"]),
                ]
            )
        for x in r["raw"]:
            detail.append(
                [
                    f"{r['rows']:,}",
                    f"raw {x['variant']}",
                    f"{x['seconds']:.2f}",
                    f"{x['cpu_seconds']:.2f}",
                    "",
                    mib(x["hwm_kib"]),
                ]
            )
        seed = r["seed"]
        detail.append(
            [f"{r['rows']:,}", "seed", f"{seed['seconds']}", "", f"generate NDJSON {seed['generate_seconds']} s", ""]
        )
    print_table(["rows", "what", "wall s", "CPU s", "detail", "peak RSS"], detail)
    if len(results) > 1:
        first, last = results[0], results[-1]
        grow_p = (max(x["hwm_kib"] for x in last["pipeline"]) - max(x["hwm_kib"] for x in first["pipeline"])) / 1024
        grow_r = (max(x["hwm_kib"] for x in last["raw"]) - max(x["hwm_kib"] for x in first["raw"])) / 1024
        memory_limit, threads = _duckdb_defaults()
        print(
            f"Peak RSS from {first['rows']:,} to {last['rows']:,} rows: "
            f"service {grow_p:+.0f} MiB, raw {grow_r:+.0f} MiB "
            f"(DuckDB memory_limit {memory_limit}, threads {threads})."
        )


def main() -> None:
    parser = argparse.ArgumentParser(description="cost_billing pipeline vs hand-written DuckDB, time and peak RSS.")
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated row counts (one day each)")
    parser.add_argument("--rows", type=int, default=None, help="a single size (overrides --sizes)")
    parser.add_argument("--day", type=date.fromisoformat, default=DEFAULT_DAY, help="the usage day (UTC)")
    parser.add_argument("--repeats", type=int, default=3, help="pipeline runs and raw attempts per filter, per size")
    parser.add_argument(
        "--memory-limit", default=None, help="DuckDB memory_limit for the service and raw (default: the service's)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--worker", choices=["seed", "raw"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=sorted(RAW_FILTERS), default="cast", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker is not None:
        rows = args.rows or 0
        if args.worker == "seed":
            print(json.dumps(asyncio.run(_seed(args.db, rows, args.day)), default=str))
        else:
            print(json.dumps(_raw(args.db, rows, args.day, args.variant)))
        return

    if args.memory_limit:
        os.environ["DUCKDB_MEMORY_LIMIT"] = args.memory_limit
    sizes = [args.rows] if args.rows else [int(s) for s in args.sizes.split(",") if s.strip()]
    print_header("Benchmark B: cost_billing pipeline vs hand-written DuckDB")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-etl-") as tmp:
        for rows in sizes:
            results.append(_size(args, rows, Path(tmp)))
    print()
    _report(results)
    print_footer()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
