"""Benchmark B: the cost_billing pipeline against the same load written by hand, in the warehouse.

``cd /work/main && .venv/bin/python -m benchmarks.etl_cost_billing`` (DuckDB, 100k and 1M rows, a
few minutes); ``... -m benchmarks.etl_cost_billing --backend bigquery`` (the local BigQuery
emulator, 10k and 50k rows). For each size N:

1. N rows of demo billing export for ONE day are written by a fresh process (``seed_demo_billing``:
   generator + NDJSON load job, no late corrections, so exactly N rows): DuckDB into a file, once
   per size (each attempt then gets a fresh copy); BigQuery into a fresh emulator project per
   attempt (``bench-proj-N``, seeding takes ~2 s at 50k rows);
2. **pipeline**: the real service (``python -m src.app``; DuckDB with its default settings:
   memory_limit 2GB, 2 threads; or ``WAREHOUSE=bigquery`` on the emulator's project, env as
   ``tests/backends.py`` ``BigQueryBackend.env``) started fresh; bootstrap, onboard, ``POST`` a run
   of ``gcp/cost/cost_billing`` for that day and wait until it is done. Timed from the POST to
   completion (seen in the service's log, see ``_wait_for_run``); the step's ``duration_ms`` from
   the run's step log and CPU-seconds are shown too (service; + emulator on BigQuery). Peak RSS is
   the service's ``VmHWM`` before the run (after bootstrap + onboarding) and after it, and its
   ``VmRSS`` sampled every 20 ms during the run, split by step with the step log's times;
3. **raw**: a fresh process per attempt sends the hand-written ``INSERT … SELECT`` of the same
   columns into an empty table with the destination's schema (``configs/gcp/bq_etl/
   schema_template.json: billing_cost``) and times that statement alone. DuckDB: the file copy
   opened exactly as the backend opens it (in-memory database + ATTACH under the project id, same
   memory_limit/threads, UTC), credits with list functions. BigQuery: the official
   google-cloud-bigquery client (anonymous credentials, ``ClientOptions(api_endpoint=…)``) on a
   freshly seeded project, table with the same partitioning and clustering. Two filters are tried
   (the day as ``CAST/DATE(ts) BETWEEN`` and as a timestamp range); the one with the lower median
   is the baseline. Peak RSS is that process's own ``VmHWM``.

Steps 2 and 3 are repeated ``--repeats`` times, interleaved, and medians are compared (the machine
may be shared; the CPU-seconds ratio is shown as a check that is less sensitive to that).
Targets: pipeline time / raw time <= 1.25; peak RSS that does not grow with the row count.

The emulator runs BigQuery SQL on an embedded DuckDB of its own; it is much slower than our DuckDB
backend per statement (each is a job over HTTP; the test suite runs ~20x slower on it) and keeps
every table in memory, hence the smaller sizes. Its figures show the overhead of our layer on the
BigQuery code path (extra statements, round trips, bookkeeping), not BigQuery's speed. On BigQuery
the emulator's job list is read after each run to show where the pipeline's time went, statement
by statement.
Internal worker modes (``--worker seed|raw``) are used by the script itself.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks._common import (
    REPO,
    RssSampler,
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
    step_peak_table,
)

RATIO_TARGET = 1.25
DEFAULT_DAY = date(2026, 11, 20)
ORG = "bench_etl"
DEFAULT_SIZES = {"duckdb": "100000,1000000", "bigquery": "10000,50000"}
BQ_RETRY_DEADLINE_SECONDS = "30"
DESTINATION_TABLE = "billing_cost_daily"
FALLBACK_POLL_SECONDS = 10.0  # a run's completion is read from the service's log; polling is the fallback
_projects = itertools.count(1)

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

# The same load in BigQuery Standard SQL, as one would write it by hand for the console: one
# INSERT ... SELECT into the destination (no MERGE, no reconciliation, no bookkeeping).
RAW_SELECT_BQ = """
SELECT
  DATE(b.usage_start_time),
  b.billing_account_id,
  b.service.id, b.service.description,
  b.sku.id, b.sku.description,
  b.usage_start_time, b.usage_end_time,
  b.project.id, b.project.number, b.project.name, b.project.ancestry_numbers,
  TO_JSON_STRING(b.project.labels), TO_JSON_STRING(b.labels),
  TO_JSON_STRING(b.system_labels), TO_JSON_STRING(b.tags),
  b.location.location, b.location.country, b.location.region, b.location.zone,
  b.transaction_type, b.seller_name,
  b.cost,
  IFNULL((SELECT SUM(c.amount) FROM UNNEST(b.credits) AS c), 0),
  b.cost + IFNULL((SELECT SUM(c.amount) FROM UNNEST(b.credits) AS c), 0),
  TO_JSON_STRING(b.credits),
  b.currency, b.currency_conversion_rate, b.cost_at_list,
  b.usage.amount, b.usage.unit, b.usage.amount_in_pricing_units, b.usage.pricing_unit,
  b.invoice.month, b.invoice.publisher_type,
  b.cost_type,
  b.adjustment_info.id, b.adjustment_info.description, b.adjustment_info.mode, b.adjustment_info.type,
  b.export_time,
  @org_slug, @pipeline_logging_id, CURRENT_TIMESTAMP()
FROM `{source}` AS b
"""
RAW_FILTERS_BQ = {
    "date": "WHERE DATE(b.usage_start_time) BETWEEN @start_date AND @end_date",
    "range": "WHERE b.usage_start_time >= TIMESTAMP(@start_date) "
    "AND b.usage_start_time < TIMESTAMP(DATE_ADD(@end_date, INTERVAL 1 DAY))",
}


def _filters(backend: str) -> dict[str, str]:
    return RAW_FILTERS_BQ if backend == "bigquery" else RAW_FILTERS


def _project() -> str:
    from src.core.settings import Settings

    return str(Settings.model_fields["gcp_project_id"].default)


def _duckdb_defaults() -> tuple[str, int]:
    """The service's DuckDB memory_limit and threads (its Settings defaults, or DUCKDB_MEMORY_LIMIT)."""
    from src.core.settings import Settings

    fields = Settings.model_fields
    memory_limit = os.environ.get("DUCKDB_MEMORY_LIMIT") or str(fields["duckdb_memory_limit"].default)
    return memory_limit, int(fields["duckdb_threads"].default)


def _bigquery_env(project: str, endpoint: str) -> dict[str, str]:
    """The service's environment on the emulator (as tests/backends.py BigQueryBackend.env)."""
    return {
        "WAREHOUSE": "bigquery",
        "GCP_PROJECT_ID": project,
        "BIGQUERY_API_ENDPOINT": endpoint,
        "BIGQUERY_RETRY_DEADLINE_SECONDS": BQ_RETRY_DEADLINE_SECONDS,
    }


def _bq_client(project: str, endpoint: str) -> Any:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=project, credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=endpoint)
    )


# --- workers (fresh processes) -----------------------------------------------------------------
async def _seed(db: Path | None, rows: int, day: date, *, project: str | None, endpoint: str | None) -> dict[str, Any]:
    from src.core.demo.seed import seed_demo_billing
    from src.core.engine.base import Warehouse

    wh: Warehouse
    if endpoint is not None:
        from src.core.engine.bigquery_backend import BigQueryWarehouse

        assert project is not None
        wh = BigQueryWarehouse(
            project=project,
            location="US",
            api_endpoint=endpoint,
            maximum_bytes_billed=10**12,
            timeout_seconds=600,
            retry_deadline_seconds=float(BQ_RETRY_DEADLINE_SECONDS),
        )
    else:
        from src.core.engine.duckdb_backend import DuckDBWarehouse

        assert db is not None
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


def _destination_options() -> dict[str, Any]:
    """Partitioning and clustering of the pipeline's destination (its ``table_config``)."""
    import yaml

    pipeline = yaml.safe_load((REPO / "configs/gcp/cost/cost_billing.yml").read_text(encoding="utf-8"))
    config: dict[str, Any] = pipeline["steps"][0]["config"]["destination"]["table_config"]
    return config


def _raw_bigquery(project: str, endpoint: str, emulator_pid: int, rows: int, day: date, variant: str) -> dict[str, Any]:
    """The hand-written INSERT ... SELECT sent straight to the emulator with the official client."""
    from google.cloud import bigquery

    from src.core.demo.billing_export import export_table_name
    from src.core.demo.seed import DATASET
    from src.core.engine.schema import SchemaField
    from src.core.processors.gcp.bq_etl import schema_templates

    def field(f: SchemaField) -> bigquery.SchemaField:
        return bigquery.SchemaField(f.name, f.type, mode=f.mode, fields=[field(x) for x in f.fields])

    hwm_start = _self_kib("VmHWM")
    client = _bq_client(project, endpoint)
    schema = schema_templates(REPO / "configs")["billing_cost"]
    options = _destination_options()
    client.create_dataset(bigquery.Dataset(f"{project}.bench"), exists_ok=True)
    table = bigquery.Table(f"{project}.bench.dest", schema=[field(f) for f in schema])
    partitioning = options.get("time_partitioning") or {}
    if partitioning:
        table.time_partitioning = bigquery.TimePartitioning(type_=partitioning["type"], field=partitioning["field"])
    table.clustering_fields = list(options.get("clustering_fields") or []) or None
    client.create_table(table)
    columns = ", ".join(f"`{f.name}`" for f in schema)
    source = f"{project}.{DATASET}.{export_table_name()}"
    sql = (
        f"INSERT INTO `{project}.bench.dest` ({columns})"
        + RAW_SELECT_BQ.format(source=source)
        + RAW_FILTERS_BQ[variant]
    )
    config = bigquery.QueryJobConfig(
        query_parameters=[
            bigquery.ScalarQueryParameter("org_slug", "STRING", ORG),
            bigquery.ScalarQueryParameter("pipeline_logging_id", "STRING", "raw-baseline"),
            bigquery.ScalarQueryParameter("start_date", "DATE", day),
            bigquery.ScalarQueryParameter("end_date", "DATE", day),
        ],
        use_query_cache=False,
    )
    hwm_before = _self_kib("VmHWM")
    cpu0, emu_cpu0, started = os.times(), proc_cpu_seconds(emulator_pid), time.perf_counter()
    job = client.query(sql, job_config=config)
    job.result(timeout=1800)
    seconds = time.perf_counter() - started
    cpu1, emu_cpu1 = os.times(), proc_cpu_seconds(emulator_pid)
    hwm_after = _self_kib("VmHWM")
    inserted = int(job.num_dml_affected_rows or 0)
    (count,) = next(iter(client.query(f"SELECT COUNT(*) FROM `{project}.bench.dest`").result())).values()
    client.close()
    if count != rows or inserted != rows:
        raise SystemExit(f"raw load wrote {inserted}/{count} rows, expected {rows}")
    client_cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {
        "variant": variant,
        "seconds": seconds,
        "cpu_seconds": client_cpu + (emu_cpu1 - emu_cpu0),
        "client_cpu_seconds": client_cpu,
        "emulator_cpu_seconds": emu_cpu1 - emu_cpu0,
        "emulator_rss_kib": proc_status_kib(emulator_pid, "VmRSS"),
        "rows": int(count),
        "hwm_start_kib": hwm_start,
        "hwm_before_kib": hwm_before,
        "hwm_kib": hwm_after,
    }


def _self_kib(field: str) -> int:
    return proc_status_kib(os.getpid(), field)


# --- the emulator's job list: where a run's time went ------------------------------------------
def _job_kind(sql: str) -> str:
    text = " ".join(sql.split())
    if text.startswith("MERGE") and DESTINATION_TABLE in text and "ON FALSE" in text:
        return "write: MERGE replacing the day"
    if "AS row_count" in text and "FROM (" in text:
        return "check: measures of the load query (before writing)"
    if "AS row_count" in text and DESTINATION_TABLE in text:
        return "check: measures of the destination (after writing)"
    if "AS row_count" in text:
        return "source totals (reconcile source_query)"
    return "bookkeeping: admission, run/step/DQ rows, table checks"


def _run_jobs(project: str, endpoint: str, since: datetime, until: datetime) -> dict[str, Any]:
    """Seconds and counts of the emulator's query jobs created in [since, until], by kind."""
    client = _bq_client(project, endpoint)
    try:
        jobs = list(client.list_jobs(project=project, all_users=True, min_creation_time=since - timedelta(seconds=1)))
    finally:
        client.close()
    kinds: dict[str, dict[str, float]] = {}
    for job in jobs:
        query = getattr(job, "query", None)
        if not query or job.created is None or job.ended is None or not since <= job.created <= until:
            continue
        kind = kinds.setdefault(_job_kind(query), {"seconds": 0.0, "jobs": 0})
        kind["seconds"] += (job.ended - job.created).total_seconds()
        kind["jobs"] += 1
    return kinds


def _drop_project(project: str, endpoint: str) -> None:
    """Free the emulator's memory: every dataset of a finished attempt's project."""
    client = _bq_client(project, endpoint)
    try:
        for dataset in client.list_datasets(project=project):
            client.delete_dataset(dataset.reference, delete_contents=True, not_found_ok=True)
    finally:
        client.close()


# --- the pipeline over HTTP --------------------------------------------------------------------
def _wait_for_run(server: Server, http: Any, run_id: str, headers: dict[str, str], started: float) -> tuple[float, int]:
    """Seconds from ``started`` until the run is done, and the HTTP polls spent.

    Polling ``GET /runs/{id}`` costs the service a few queries each time (three jobs on the
    emulator), on the same two cores as the load, so completion is seen in the service's log
    instead (its ``run finished`` line carries the run id; the file is read every 10 ms, no load on
    the service), with an HTTP poll every ``FALLBACK_POLL_SECONDS`` should that line ever change.
    """
    offset, polls, next_poll = 0, 0, started + FALLBACK_POLL_SECONDS
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
            next_poll = time.perf_counter() + FALLBACK_POLL_SECONDS


def _pipeline(
    data_dir: Path,
    rows: int,
    day: date,
    *,
    env: Mapping[str, str],
    template: Path | None = None,
    emulator_pid: int | None = None,
) -> dict[str, Any]:
    """A fresh service on fresh data (a copy of the seeded file, or a freshly seeded emulator
    project): bootstrap, onboard, one run of the day."""
    data_dir.mkdir(parents=True)
    if template is not None:
        shutil.copy(template, data_dir / "warehouse.duckdb")
    server = Server.service(data_dir, env=env)
    server.start()

    def emulator_cpu() -> float:
        return proc_cpu_seconds(emulator_pid) if emulator_pid is not None else 0.0

    try:
        with server.client() as http:
            bootstrap(http)
            key = onboard(http, ORG)
            headers = {"X-API-Key": key}
            hwm_before = proc_status_kib(server.pid, "VmHWM")
            cpu0, emu_cpu0 = proc_cpu_seconds(server.pid), emulator_cpu()
            wall_started = datetime.now(UTC)
            started = time.perf_counter()
            with RssSampler(server.pid) as rss:
                path, body = f"/api/v1/pipelines/run/{ORG}/gcp/cost/cost_billing", {"date": day.isoformat()}
                response = http.post(path, headers=headers, json=body)
                if response.status_code != 202:
                    raise RuntimeError(f"run: {response.status_code} {response.text}")
                run_id = response.json()["pipeline_logging_id"]
                seconds, polls = _wait_for_run(server, http, run_id, headers, started)
            wall_done = datetime.now(UTC)
            cpu, emu_cpu = proc_cpu_seconds(server.pid) - cpu0, emulator_cpu() - emu_cpu0
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
    result: dict[str, Any] = {
        "seconds": seconds,
        "cpu_seconds": cpu + emu_cpu,
        "service_cpu_seconds": cpu,
        "step_ms": step.get("duration_ms"),
        "run_ms": run.get("duration_ms"),
        "polls": polls,
        "rows": processed,
        "hwm_before_kib": hwm_before,
        "hwm_kib": hwm_after,
        "rss_after_kib": rss_after,
        "step_peak_kib": rss.peaks_by_step(run["steps"]),
        "dq_passed": all(d["passed"] for d in run.get("dq_results", [])),
        "window": [wall_started.isoformat(), wall_done.isoformat()],
    }
    if emulator_pid is not None:
        result["emulator_cpu_seconds"] = emu_cpu
        result["emulator_rss_kib"] = proc_status_kib(emulator_pid, "VmRSS")
    return result


def _size_duckdb(args: argparse.Namespace, rows: int, root: Path) -> dict[str, Any]:
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
    env = {"DUCKDB_MEMORY_LIMIT": _duckdb_defaults()[0]}
    for attempt in range(1, args.repeats + 1):
        print(f"  {rows:,} rows, attempt {attempt}: pipeline over HTTP ...", flush=True)
        pipelines.append(_pipeline(work / f"service-{attempt}", rows, args.day, env=env, template=template))
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


def _size_bigquery(args: argparse.Namespace, rows: int, root: Path, endpoint: str, emulator_pid: int) -> dict[str, Any]:
    """Per attempt, interleaved: a pipeline run and one raw INSERT per filter, each on a freshly
    seeded project of its own (the emulator keeps everything in memory: finished projects are dropped)."""
    me = [sys.executable, "-m", "benchmarks.etl_cost_billing", "--backend", "bigquery", "--endpoint", endpoint]
    day = args.day.isoformat()
    pipelines: list[dict[str, Any]] = []
    raws: list[dict[str, Any]] = []
    seeds: list[dict[str, Any]] = []

    def seed(project: str) -> None:
        argv = [*me, "--worker", "seed", "--project", project, "--rows", str(rows), "--day", day]
        seeds.append(run_json(argv, timeout=1800))

    for attempt in range(1, args.repeats + 1):
        project = f"bench-proj-{next(_projects)}"
        print(f"  {rows:,} rows, attempt {attempt}: seeding {project}, pipeline over HTTP ...", flush=True)
        seed(project)
        run = _pipeline(
            root / f"rows-{rows}-service-{attempt}",
            rows,
            args.day,
            env=_bigquery_env(project, endpoint),
            emulator_pid=emulator_pid,
        )
        since, until = (datetime.fromisoformat(t) for t in run["window"])
        run["jobs"] = _run_jobs(project, endpoint, since, until)
        pipelines.append(run)
        _drop_project(project, endpoint)
        shutil.rmtree(root / f"rows-{rows}-service-{attempt}")
        for variant in RAW_FILTERS_BQ:
            project = f"bench-proj-{next(_projects)}"
            step = f"seeding {project}, raw INSERT on the emulator ({variant})"
            print(f"  {rows:,} rows, attempt {attempt}: {step} ...", flush=True)
            seed(project)
            argv = [
                *me, "--worker", "raw", "--project", project, "--emulator-pid", str(emulator_pid),
                "--rows", str(rows), "--day", day, "--variant", variant,
            ]  # fmt: skip
            raws.append(run_json(argv, timeout=1800))
            _drop_project(project, endpoint)
    return {"rows": rows, "seed": seeds[0], "pipeline": pipelines, "raw": raws}


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _report(results: list[dict[str, Any]], backend: str) -> None:
    bq = backend == "bigquery"
    filters = _filters(backend)
    timing: list[list[Any]] = []
    memory: list[list[Any]] = []
    for r in results:
        rows, runs = r["rows"], r["pipeline"]
        p_med = _median([x["seconds"] for x in runs])
        step_med = _median([x["step_ms"] / 1000 for x in runs])
        p_cpu = _median([x["cpu_seconds"] for x in runs])
        by_variant = {v: [x for x in r["raw"] if x["variant"] == v] for v in filters}
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
        line = [
            f"{rows:,}",
            mib(max(x["hwm_before_kib"] for x in runs)),
            mib(max(x["hwm_kib"] for x in runs)),
            mib(max(x["rss_after_kib"] for x in runs)),
            mib(max(x["hwm_before_kib"] for x in r["raw"])),
            mib(max(x["hwm_kib"] for x in r["raw"])),
        ]
        if bq:
            line += [mib(max(x["emulator_rss_kib"] for x in runs)), mib(max(x["emulator_rss_kib"] for x in r["raw"]))]
        memory.append(line)
    n = len(results[0]["pipeline"])
    where = "the emulator" if bq else "DuckDB"
    print(f"Time, medians of {n} attempts. pipeline: POST -> COMPLETED over HTTP; step: the step's duration_ms")
    print(f"from the run's step log; raw: the hand-written INSERT ... SELECT alone on {where}, the filter variant")
    print("with the lower median. best/best: fastest pipeline over fastest raw. CPU: CPU-seconds during the run")
    if bq:
        print("(service + emulator) over CPU-seconds of the raw INSERT (client + emulator); both medians.")
    else:
        print("(service) over the raw process's CPU-seconds of its INSERT; both medians.")
    print("(The CPU ratio is less sensitive to other load on the machine.)")
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
    headers = ["rows", "service before run", "service peak", "service RSS after", "raw before insert", "raw peak"]
    if bq:
        print("Peak RSS (VmHWM, max over attempts). Service: after bootstrap + onboarding (before the run) and")
        print("after the run. Raw: the client process before its INSERT (imports, table created) and after it.")
        print("Emulator: its VmRSS right after each pipeline run / raw INSERT (one emulator process for all;")
        print("finished projects are dropped) -- the emulator's memory, shown for context, not a target.")
        headers += ["emulator RSS after run", "emulator RSS after raw"]
    else:
        print("Peak RSS (VmHWM, max over attempts). Service: after bootstrap + onboarding (before the run) and")
        print("after the run. Raw: the fresh process before its INSERT (imports + ATTACH) and after it.")
    print_table(headers, memory)
    step_peak_table([(f"{r['rows']:,}", r["pipeline"], max(x["hwm_kib"] for x in r["raw"])) for r in results])
    if bq:
        _report_jobs(results)
    print("All attempts")
    detail: list[list[Any]] = []
    for r in results:
        for i, x in enumerate(r["pipeline"], 1):
            cpu = f"{x['cpu_seconds']:.2f}"
            if bq:
                cpu += f" (service {x['service_cpu_seconds']:.2f})"
            detail.append(
                [
                    f"{r['rows']:,}",
                    f"pipeline #{i}",
                    f"{x['seconds']:.2f}",
                    cpu,
                    f"step {x['step_ms']} ms, run {x['run_ms']} ms, {x['polls']} polls",
                    mib(x["hwm_kib"]),
                ]
            )
        for x in r["raw"]:
            cpu = f"{x['cpu_seconds']:.2f}"
            if bq:
                cpu += f" (client {x['client_cpu_seconds']:.2f})"
            detail.append([f"{r['rows']:,}", f"raw {x['variant']}", f"{x['seconds']:.2f}", cpu, "", mib(x["hwm_kib"])])
        seed = r["seed"]
        detail.append(
            [f"{r['rows']:,}", "seed", f"{seed['seconds']}", "", f"generate NDJSON {seed['generate_seconds']} s", ""]
        )
    print_table(["rows", "what", "wall s", "CPU s", "detail", "peak RSS"], detail)
    if len(results) > 1:
        first, last = results[0], results[-1]
        grow_p = (max(x["hwm_kib"] for x in last["pipeline"]) - max(x["hwm_kib"] for x in first["pipeline"])) / 1024
        grow_r = (max(x["hwm_kib"] for x in last["raw"]) - max(x["hwm_kib"] for x in first["raw"])) / 1024
        if bq:
            setting = "the rows stay in the emulator"
        else:
            memory_limit, threads = _duckdb_defaults()
            setting = f"DuckDB memory_limit {memory_limit}, threads {threads}"
        print(
            f"Peak RSS from {first['rows']:,} to {last['rows']:,} rows: "
            f"service {grow_p:+.0f} MiB, raw {grow_r:+.0f} MiB ({setting})."
        )


def _report_jobs(results: list[dict[str, Any]]) -> None:
    """Where a pipeline run's time went, from the emulator's job list (medians over attempts)."""
    kinds = sorted({k for r in results for x in r["pipeline"] for k in x["jobs"]})
    rows: list[list[Any]] = []
    for kind in kinds:
        line: list[Any] = [kind]
        for r in results:
            runs = r["pipeline"]
            seconds = _median([x["jobs"].get(kind, {}).get("seconds", 0.0) for x in runs])
            jobs = _median([x["jobs"].get(kind, {}).get("jobs", 0) for x in runs])
            line.append(f"{seconds:.2f} s ({jobs:.0f} jobs, {seconds / _median([x['seconds'] for x in runs]):.0%})")
        rows.append(line)
    outside: list[Any] = ["outside query jobs (REST calls: tables, datasets; Python)"]
    total: list[Any] = ["pipeline, POST -> COMPLETED"]
    for r in results:
        runs = r["pipeline"]
        p_med = _median([x["seconds"] for x in runs])
        rest = _median([x["seconds"] - sum(k["seconds"] for k in x["jobs"].values()) for x in runs])
        outside.append(f"{rest:.2f} s ({rest / p_med:.0%})")
        total.append(f"{p_med:.2f} s")
    print("Where the pipeline's time went on the emulator: its query jobs created during the run (jobs.list,")
    print("created -> ended), by kind; median over attempts, share of the median run. Jobs may overlap (the")
    print("key's last-use UPDATE runs in the background; a heartbeat every 30 s), so shares need not add to 100 %.")
    print_table(["statement", *(f"{r['rows']:,} rows" for r in results)], [*rows, outside, total])


def main() -> None:
    parser = argparse.ArgumentParser(
        description="cost_billing pipeline vs the hand-written load in the warehouse, time and peak RSS."
    )
    parser.add_argument(
        "--backend",
        choices=["duckdb", "bigquery"],
        default="duckdb",
        help="duckdb (a file) or bigquery (the local emulator, .venv-bq; its speed is not BigQuery's)",
    )
    parser.add_argument(
        "--sizes",
        default=None,
        help="comma-separated row counts, one day each (default: duckdb 100000,1000000; bigquery 10000,50000)",
    )
    parser.add_argument("--rows", type=int, default=None, help="a single size (overrides --sizes)")
    parser.add_argument("--day", type=date.fromisoformat, default=DEFAULT_DAY, help="the usage day (UTC)")
    parser.add_argument("--repeats", type=int, default=3, help="pipeline runs and raw attempts per filter, per size")
    parser.add_argument(
        "--memory-limit", default=None, help="DuckDB memory_limit for the service and raw (default: the service's)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--worker", choices=["seed", "raw"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--project", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--emulator-pid", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--variant", choices=sorted({*RAW_FILTERS, *RAW_FILTERS_BQ}), default=None, help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    bq = args.backend == "bigquery"

    if args.worker is not None:
        rows = args.rows or 0
        if args.worker == "seed":
            seeded = _seed(args.db, rows, args.day, project=args.project, endpoint=args.endpoint if bq else None)
            print(json.dumps(asyncio.run(seeded), default=str))
        elif bq:
            variant = args.variant or "date"
            print(json.dumps(_raw_bigquery(args.project, args.endpoint, args.emulator_pid, rows, args.day, variant)))
        else:
            print(json.dumps(_raw(args.db, rows, args.day, args.variant or "cast")))
        return

    if args.memory_limit:
        if bq:
            parser.error("--memory-limit is a DuckDB setting")
        os.environ["DUCKDB_MEMORY_LIMIT"] = args.memory_limit
    sizes = [args.rows] if args.rows else [int(s) for s in (args.sizes or DEFAULT_SIZES[args.backend]).split(",") if s]
    if bq:
        print_header("Benchmark B: cost_billing pipeline vs a hand-written INSERT, on the BigQuery emulator")
        print("NOTE: the BigQuery emulator (bqemulator, .venv-bq) runs BigQuery SQL on an embedded DuckDB of its")
        print("own. It is much slower than the DuckDB backend (every statement is a job over HTTP; the test suite")
        print("runs ~20x slower on it) and keeps every table in memory, hence the smaller default sizes (10,000")
        print("and 50,000 rows). Its speed is not BigQuery's: the figures show the overhead of our layer on the")
        print("BigQuery code path (extra statements, round trips, bookkeeping), not cloud speed.\n")
    else:
        print_header("Benchmark B: cost_billing pipeline vs hand-written DuckDB")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-etl-") as tmp:
        root = Path(tmp)
        if bq:
            from tests.bqemulator import BigQueryEmulator

            (root / "emulator").mkdir()
            emulator = BigQueryEmulator(log_dir=root / "emulator")
            print("  starting the BigQuery emulator ...", flush=True)
            emulator.start()
            try:
                assert emulator.proc is not None
                for rows in sizes:
                    results.append(_size_bigquery(args, rows, root, emulator.endpoint, emulator.proc.pid))
            finally:
                emulator.stop()
        else:
            for rows in sizes:
                results.append(_size_duckdb(args, rows, root))
    print()
    _report(results, args.backend)
    print_footer()
    if args.json:
        args.json.write_text(json.dumps({"backend": args.backend, "results": results}, indent=2, default=str))


if __name__ == "__main__":
    main()
