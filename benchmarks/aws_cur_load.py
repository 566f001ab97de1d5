"""Benchmark E: the AWS ``cost_billing`` pipeline against the same load written by hand (DuckDB).

``cd /work/main && .venv/bin/python -m benchmarks.aws_cur_load`` (1M CUR 2.0 rows, a few minutes).

1. One CUR 2.0 delivery of billing period 2026-10 is written by the demo generator
   (``src/core/demo/aws_cur_export.py``: ``--rows-per-day`` x enough days for ``--rows`` line items,
   plus the month's fee and tax rows; Parquet, 500,000 rows per file) and uploaded to a local S3
   server (moto's server, from ``requirements-local.txt``, started by this script on a free port);
2. **pipeline**: the real service (``python -m src.app``, DuckDB with its default settings:
   memory_limit 2GB, 2 threads, ``AWS_ENDPOINT_URL`` = the local S3 server) started fresh on an
   empty file; bootstrap, onboard, store the org's AWS credentials and source (each checked against
   the S3 server), ``POST`` a run of ``aws/cost/cost_billing`` for the period and wait until it is
   done (seen in the service's log). Timed from the POST to completion; ``download`` is the step's
   own measure of reading the manifest and downloading the files it lists from the S3 server, and
   ``load`` = the step's ``duration_ms`` minus that. Peak RSS is the service's ``VmHWM`` before the
   run (after bootstrap, onboarding and the two checks) and after it, and its ``VmRSS`` sampled
   every 20 ms during the run, split by step with the step log's times;
3. **raw**: a fresh process per attempt opens an empty DuckDB file exactly as the backend does
   (in-memory database + ATTACH under the project id, same memory_limit/threads, UTC), creates the
   destination table from ``configs/aws/s3_data_loader/schema_template.json`` and times one
   hand-written ``INSERT … SELECT … FROM read_parquet([the downloaded files], hive_partitioning =
   false)`` of the same columns (maps with ``to_json``, the usage day, the billing period) — the
   files already on local disk. Peak RSS is that process's own ``VmHWM``.

Steps 2 and 3 are repeated ``--repeats`` times, interleaved, and medians are compared. Target
(issue 14): pipeline ÷ raw ≤ 1.25 and the pipeline's peak RSS no higher than the raw load's. The
pipeline's time includes fetching the files from S3 (here a local server), which the hand-written
load does not do; both ratios are shown.
Internal worker mode (``--worker raw``) is used by the script itself.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import (
    REPO,
    RssSampler,
    Server,
    bootstrap,
    free_port,
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
from benchmarks.etl_cost_billing import _duckdb_defaults, _project, _self_kib, _wait_for_run

RATIO_TARGET = 1.25
PERIOD = date(2026, 10, 1)
BP = "2026-10"
ORG = "bench_aws"
BUCKET = "bench-cur-exports"
PREFIX = "cur2"
EXPORT = "bench-cur2-hourly"
KEYS = {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}


def _raw_select(columns: list[tuple[str, str]], files: list[Path]) -> str:
    """The pipeline's load written the DuckDB way: maps to JSON text, the day, the period."""
    exprs = [f'CAST(to_json("{n}") AS VARCHAR)' if t == "JSON" else f'"{n}"' for n, t in columns]
    paths = ", ".join(f"'{p}'" for p in files)
    return (
        f"SELECT {', '.join(exprs)}, CAST(line_item_usage_start_date AS DATE), "
        "strftime(bill_billing_period_start_date, '%Y-%m'), $org_slug, $pipeline_logging_id, current_timestamp "
        f"FROM read_parquet([{paths}], hive_partitioning = false)"
    )


def _raw(db: Path, files: list[Path], rows: int) -> dict[str, Any]:
    import duckdb

    from src.core.engine.schema import load_schema_file
    from src.core.processors.destination import load_templates

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
    schema = load_templates(REPO / "configs", Path("aws/s3_data_loader/schema_template.json"))["aws_billing_cost"]
    ddl = ", ".join(f'"{f.name}" {f.duckdb_type()}' + (" NOT NULL" if f.mode == "REQUIRED" else "") for f in schema)
    con.execute(f'CREATE SCHEMA "{project}".bench')
    con.execute(f'CREATE TABLE "{project}".bench.dest ({ddl})')
    source = load_schema_file(REPO / "configs/aws/cost/cur2_columns.json")
    sql = f'INSERT INTO "{project}".bench.dest ' + _raw_select([(f.name, f.type) for f in source], files)
    hwm_before = _self_kib("VmHWM")
    cpu0, started = os.times(), time.perf_counter()
    (inserted,) = con.execute(sql, {"org_slug": ORG, "pipeline_logging_id": "raw-baseline"}).fetchone() or (0,)
    seconds = time.perf_counter() - started
    cpu1 = os.times()
    hwm_after = _self_kib("VmHWM")
    con.close()
    if inserted != rows:
        raise SystemExit(f"raw load wrote {inserted} rows, expected {rows}")
    return {
        "seconds": seconds,
        "cpu_seconds": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "rows": int(inserted),
        "hwm_start_kib": hwm_start,
        "hwm_before_kib": hwm_before,
        "hwm_kib": hwm_after,
    }


def _moto(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (work / "moto.log").open("ab")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{endpoint}/moto-api/", timeout=0.5).status_code == 200:
                return proc, endpoint
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("moto_server did not start")


def _deliver(work: Path, endpoint: str, rows: int, rows_per_day: int) -> tuple[Any, list[Path]]:
    import boto3

    from src.core.demo.aws_cur_export import write_delivery

    days = max(1, min(28, math.ceil(rows / rows_per_day)))
    root = work / "export"
    stats = write_delivery(
        root, period=PERIOD, through_day=days, execution_id="bench-1", export_name=EXPORT,
        rows_per_day=rows_per_day, bucket=BUCKET, prefix=PREFIX,
    )  # fmt: skip
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=KEYS["access_key_id"], aws_secret_access_key=KEYS["secret_access_key"],
    )  # fmt: skip
    s3.create_bucket(Bucket=BUCKET)
    for key in (*stats.data_keys, stats.manifest_key):
        s3.upload_file(str(root / key), BUCKET, key)
    return stats, [root / k for k in stats.data_keys]


def _pipeline(data_dir: Path, endpoint: str, rows: int) -> dict[str, Any]:
    server = Server.service(data_dir, env={"AWS_ENDPOINT_URL": endpoint, "DUCKDB_MEMORY_LIMIT": _duckdb_defaults()[0]})
    server.start()
    try:
        with server.client() as http:
            bootstrap(http)
            key = onboard(http, ORG)
            headers = {"X-API-Key": key}
            for path, body in (
                ("credentials/aws", KEYS),
                ("aws-source", {"bucket": BUCKET, "prefix": PREFIX, "export_name": EXPORT, "region": "us-east-1"}),
            ):
                response = http.put(f"/api/v1/organizations/{ORG}/{path}", headers=headers, json=body)
                if response.status_code != 200:
                    raise RuntimeError(f"{path}: {response.status_code} {response.text}")
            hwm_before = proc_status_kib(server.pid, "VmHWM")
            cpu0, started = proc_cpu_seconds(server.pid), time.perf_counter()
            with RssSampler(server.pid) as rss:
                path, body = f"/api/v1/pipelines/run/{ORG}/aws/cost/cost_billing", {"billing_period": BP}
                response = http.post(path, headers=headers, json=body)
                if response.status_code != 202:
                    raise RuntimeError(f"run: {response.status_code} {response.text}")
                run_id = response.json()["pipeline_logging_id"]
                seconds, _ = _wait_for_run(server, http, run_id, headers, started)
            cpu = proc_cpu_seconds(server.pid) - cpu0
            run = http.get(f"/api/v1/pipelines/runs/{run_id}", headers=headers).json()
            hwm_after = proc_status_kib(server.pid, "VmHWM")
    finally:
        server.stop()
    if run["status"] != "COMPLETED":
        raise RuntimeError(f"run {run_id} {run['status']}: {json.dumps(run, default=str)[:2000]}")
    step = run["steps"][0]
    if int(step["rows_processed"]) != rows:
        raise RuntimeError(f"pipeline processed {step['rows_processed']} rows, expected {rows}")
    download = float(step["result"]["download_seconds"])
    return {
        "seconds": seconds,
        "step_seconds": step["duration_ms"] / 1000,
        "download_seconds": download,
        "load_seconds": step["duration_ms"] / 1000 - download,
        "cpu_seconds": cpu,
        "hwm_before_kib": hwm_before,
        "hwm_kib": hwm_after,
        "step_peak_kib": rss.peaks_by_step(run["steps"]),
        "dq_passed": all(d["passed"] for d in run["dq_results"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="approximate CUR line items")
    parser.add_argument("--rows-per-day", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", choices=["raw"])
    parser.add_argument("--db", type=Path)
    parser.add_argument("--files", nargs="*", type=Path)
    parser.add_argument("--expect", type=int)
    args = parser.parse_args()
    if args.worker == "raw":
        print(json.dumps(_raw(args.db, args.files, args.expect)))
        return
    print_header("Benchmark E: AWS cost_billing (CUR 2.0) pipeline vs a hand-written INSERT ... SELECT, DuckDB")
    work = Path(tempfile.mkdtemp(prefix="bench-aws-"))
    moto, endpoint = _moto(work)
    try:
        stats, files = _deliver(work, endpoint, args.rows, args.rows_per_day)
        size = sum(f.stat().st_size for f in files)
        print(f"delivery: {stats.rows:,} rows in {len(files)} Parquet files, {size / 2**20:.0f} MiB, period {BP}\n")
        pipelines, raws = [], []
        for attempt in range(1, args.repeats + 1):
            print(f"  attempt {attempt}: pipeline over HTTP ...", flush=True)
            pipelines.append(_pipeline(work / f"service-{attempt}", endpoint, stats.rows))
            shutil.rmtree(work / f"service-{attempt}")
            print(f"  attempt {attempt}: raw INSERT ... SELECT FROM read_parquet ...", flush=True)
            db = work / f"raw-{attempt}.duckdb"
            argv = [sys.executable, "-m", "benchmarks.aws_cur_load", "--worker", "raw", "--db", str(db),
                    "--expect", str(stats.rows), "--files", *map(str, files)]  # fmt: skip
            raws.append(run_json(argv, timeout=1800))
            db.unlink()
    finally:
        moto.terminate()
        moto.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    med = statistics.median
    p, load, dl = (med([x[k] for x in pipelines]) for k in ("seconds", "load_seconds", "download_seconds"))
    raw = med([x["seconds"] for x in raws])
    cpu = med([x["cpu_seconds"] for x in pipelines]) / med([x["cpu_seconds"] for x in raws])
    print(f"\nTime, medians of {args.repeats} attempts (pipeline: POST -> COMPLETED; download and load: the step's")
    print("own split; raw: the hand-written INSERT alone, files already local). CPU: service CPU-seconds during")
    print("the run over the raw process's CPU-seconds of its INSERT.")
    print_table(
        ["rows", "pipeline", "download", "load", "raw", "pipeline/raw", "load/raw", "CPU pipeline/raw",
         "target <= 1.25"],
        [[f"{stats.rows:,}", f"{p:.2f} s", f"{dl:.2f} s", f"{load:.2f} s", f"{raw:.2f} s", f"{p / raw:.2f}",
          f"{load / raw:.2f}", f"{cpu:.2f}", "MET" if p / raw <= RATIO_TARGET else "MISSED"]],
    )  # fmt: skip
    p_peak, r_peak = max(x["hwm_kib"] for x in pipelines), max(x["hwm_kib"] for x in raws)
    print("Peak RSS (VmHWM, max over attempts): the service before the run (after bootstrap, onboarding and the")
    print("AWS checks) and after it; the raw process before its INSERT and after it.")
    print_table(
        ["rows", "service before run", "service peak", "raw before insert", "raw peak", "service peak <= raw peak"],
        [[f"{stats.rows:,}", mib(max(x["hwm_before_kib"] for x in pipelines)), mib(p_peak),
          mib(max(x["hwm_before_kib"] for x in raws)), mib(r_peak), "MET" if p_peak <= r_peak else "MISSED"]],
    )  # fmt: skip
    step_peak_table([(f"{stats.rows:,}", pipelines, r_peak)])
    print(f"reconciliation passed in every pipeline run: {all(x['dq_passed'] for x in pipelines)}")
    print("raw JSON:", json.dumps({"pipeline": pipelines, "raw": raws}))
    print_footer()


if __name__ == "__main__":
    main()
