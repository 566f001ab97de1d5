"""Benchmark F: building the FOCUS rows of N GCP rows against the load of those rows, on DuckDB.

``cd /work/main && .venv/bin/python -m benchmarks.focus_build`` (1,000,000 rows, one day, 3 attempts,
~10 min on 2 cores). Target (issue 15): the FOCUS build costs at most 0.5x the load itself.

1. N rows of demo billing export for ONE day are written to a DuckDB file once (``seed_demo_billing``,
   no late corrections: exactly N rows; the seed worker of ``benchmarks.etl_cost_billing``).
2. **service**: per attempt a fresh service (``python -m src.app``, default DuckDB settings) on a fresh
   copy of the file; bootstrap, onboard, ``POST`` a run of ``gcp/cost/cost_billing`` for the day. The
   run's step log gives each step's ``duration_ms``: ``load_billing_costs`` (the load: snapshot, replace
   of the day in the cost table, reconciliation) and ``build_focus`` (the FOCUS rebuild: mapping, replace
   of the day's GCP rows in ``focus_cost``, reconciliation). Ratio = build / load of the same run.
3. **in-process**: per attempt a fresh process on a fresh copy, the warehouse opened as the service
   opens it, runs the same two writes (``Warehouse.replace_rows`` with the pipeline's load query, then
   with the FOCUS mapping) and measures each one's wall time and CPU time (process CPU, both DuckDB
   threads) -- no HTTP, no bookkeeping, no reconciliation. The CPU ratio is the least sensitive to
   other processes on the machine. A diagnostic row times the write alone: each table's rows copied
   from an in-memory copy into an empty table of the same schema (no query work at all).

Medians over the attempts. Internal worker mode (``--worker inproc``) is used by the script itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
    proc_status_kib,
    run_json,
)
from benchmarks.etl_cost_billing import _duckdb_defaults, _project, _wait_for_run

TARGET = 0.5
DEFAULT_DAY = date(2026, 11, 20)
ORG = "bench_focus"


def _load_parts(project: str, dataset: str) -> tuple[str, list[str], str, str]:
    """(load query, its columns, FOCUS mapping, reconciliation-free window) as the pipeline has them."""
    import yaml

    from src.core.demo.billing_export import export_table_name
    from src.core.processors.focus.build import mapping_sql
    from src.core.processors.gcp.bq_etl import schema_templates

    config = yaml.safe_load((REPO / "configs/gcp/cost/cost_billing.yml").read_text())["steps"][0]["config"]
    export = f"{project}.billing_export.{export_table_name()}"
    snapshot = config["snapshot"]["query"].replace("{billing_export_table}", export)
    load = config["source"]["query"].replace("{snapshot}", f"({snapshot})")
    columns = [f.name for f in schema_templates(REPO / "configs")["billing_cost"]]
    source = f"{project}.{dataset}.billing_cost_daily"
    return (
        load,
        columns,
        mapping_sql(REPO / "configs", "focus/gcp_focus_mapping.sql").replace("{source_table}", source),
        source,
    )


async def _inproc(db: Path, day: date) -> dict[str, Any]:
    from src.core.engine.duckdb_backend import DuckDBWarehouse
    from src.core.engine.loads import window_condition
    from src.core.processors.focus.build import focus_schema
    from src.core.processors.gcp.bq_etl import schema_templates

    project, dataset = _project(), "bench_focus_local"
    memory_limit, threads = _duckdb_defaults()
    wh = DuckDBWarehouse(path=db, project=project, memory_limit=memory_limit, threads=threads)
    await wh.start()
    try:
        load, columns, mapping, _ = _load_parts(project, dataset)
        await wh.create_dataset(dataset)
        cost = wh.table(dataset, "billing_cost_daily")
        focus = wh.table(dataset, "focus_cost")
        await wh.create_table(cost, schema_templates(REPO / "configs")["billing_cost"])
        await wh.create_table(focus, focus_schema(REPO / "configs"))
        params = {
            "start_date": day,
            "end_date": day,
            "org_slug": ORG,
            "pipeline_logging_id": "bench",
            "focus_provider": "gcp",
        }
        figures: dict[str, Any] = {}
        for name, target, sql, cols, where in (
            ("load", cost, load, columns, window_condition("usage_date")),
            ("focus", focus, mapping, [f.name for f in focus_schema(REPO / "configs")],
             f"{{t}}.x_Provider = @focus_provider AND {window_condition('x_UsageDate')}"),
        ):  # fmt: skip
            wall, cpu = time.perf_counter(), time.process_time()
            result = await wh.replace_rows(target, cols, sql, replace_where=where, params=params)
            figures[name] = {
                "seconds": time.perf_counter() - wall,
                "cpu_seconds": time.process_time() - cpu,
                "rows": result.inserted,
            }
        # Diagnostic: the write alone -- the same rows copied from an in-memory copy into an empty
        # table of the same schema (no query work), for each of the two tables.
        for name, table, schema in (
            ("load", cost, schema_templates(REPO / "configs")["billing_cost"]),
            ("focus", focus, focus_schema(REPO / "configs")),
        ):
            copy = wh.table(dataset, f"{table.table}_copy")
            await wh.create_table(copy, schema)
            await wh.execute(f"CREATE TEMP TABLE held_{name} AS SELECT * FROM {table.sql}")
            wall, cpu = time.perf_counter(), time.process_time()
            await wh.execute(f"INSERT INTO {copy.sql} SELECT * FROM held_{name}")
            figures[name]["write_only_cpu_seconds"] = time.process_time() - cpu
            figures[name]["write_only_seconds"] = time.perf_counter() - wall
            await wh.execute(f"DROP TABLE held_{name}")
        return figures
    finally:
        await wh.close()


def _exports(http: Any, server: Server, headers: dict[str, str], day: date) -> list[dict[str, Any]]:
    """Stream the day's FOCUS rows in each format to nowhere; bytes, time and the service's memory."""
    found = []
    for fmt in ("csv", "parquet", "jsonl"):
        rss_before, hwm_before = proc_status_kib(server.pid, "VmRSS"), proc_status_kib(server.pid, "VmHWM")
        started, size, chunks = time.perf_counter(), 0, 0
        params = {"start_date": day.isoformat(), "end_date": day.isoformat(), "format": fmt}
        with http.stream("GET", f"/api/v1/organizations/{ORG}/costs/focus", headers=headers, params=params) as answer:
            if answer.status_code != 200:
                raise RuntimeError(f"export {fmt}: {answer.status_code}")
            for chunk in answer.iter_raw():
                size += len(chunk)
                chunks += 1
        found.append({
            "format": fmt, "bytes": size, "chunks": chunks, "seconds": time.perf_counter() - started,
            "rss_before_kib": rss_before, "hwm_before_kib": hwm_before,
            "hwm_after_kib": proc_status_kib(server.pid, "VmHWM"),
            "rss_after_kib": proc_status_kib(server.pid, "VmRSS"),
        })  # fmt: skip
    return found


def _service(data_dir: Path, template: Path, day: date, *, export: bool) -> dict[str, Any]:
    data_dir.mkdir(parents=True)
    shutil.copy(template, data_dir / "warehouse.duckdb")
    server = Server.service(data_dir, env={"DUCKDB_MEMORY_LIMIT": _duckdb_defaults()[0]})
    server.start()
    try:
        with server.client() as http:
            bootstrap(http)
            headers = {"X-API-Key": onboard(http, ORG)}
            started = time.perf_counter()
            response = http.post(
                f"/api/v1/pipelines/run/{ORG}/gcp/cost/cost_billing", headers=headers, json={"date": day.isoformat()}
            )
            if response.status_code != 202:
                raise RuntimeError(f"run: {response.status_code} {response.text}")
            run_id = response.json()["pipeline_logging_id"]
            seconds, _ = _wait_for_run(server, http, run_id, headers, started)
            run = http.get(f"/api/v1/pipelines/runs/{run_id}", headers=headers).json()
            exported = _exports(http, server, headers, day) if export else []
    finally:
        server.stop()
    if run["status"] != "COMPLETED":
        raise RuntimeError(f"run {run_id} {run['status']}: {json.dumps(run, default=str)[:2000]}")
    steps = {s["step_id"]: s for s in run["steps"]}
    return {
        "seconds": seconds,
        "load_ms": steps["load_billing_costs"]["duration_ms"],
        "focus_ms": steps["build_focus"]["duration_ms"],
        "rows": steps["build_focus"]["rows_processed"],
        "dq_passed": all(d["passed"] for d in run.get("dq_results", [])),
        "exports": exported,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="FOCUS build vs the load of the same GCP rows, DuckDB.")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the one usage day")
    parser.add_argument("--day", type=date.fromisoformat, default=DEFAULT_DAY)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--worker", choices=["inproc"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "inproc":
        print(json.dumps(asyncio.run(_inproc(args.db, args.day))))
        return

    print_header(f"Benchmark F: FOCUS build vs load, {args.rows:,} GCP rows of one day, DuckDB")
    service: list[dict[str, Any]] = []
    inproc: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-focus-") as tmp:
        root = Path(tmp)
        template = root / "template.duckdb"
        seed = [sys.executable, "-m", "benchmarks.etl_cost_billing", "--worker", "seed"]
        print(f"  seeding {args.rows:,} rows ...", flush=True)
        run_json([*seed, "--db", str(template), "--rows", str(args.rows), "--day", args.day.isoformat()], timeout=3600)
        for attempt in range(1, args.repeats + 1):
            print(f"  attempt {attempt}: the pipeline over HTTP ...", flush=True)
            service.append(_service(root / f"service-{attempt}", template, args.day, export=attempt == 1))
            shutil.rmtree(root / f"service-{attempt}")
            print(f"  attempt {attempt}: in-process ...", flush=True)
            db = root / f"inproc-{attempt}.duckdb"
            shutil.copy(template, db)
            me = [sys.executable, "-m", "benchmarks.focus_build", "--worker", "inproc", "--db", str(db)]
            inproc.append(run_json([*me, "--day", args.day.isoformat()], timeout=3600))
            db.unlink()
    med = statistics.median
    print()
    print(f"Medians of {args.repeats} attempts; FOCUS rows written: {service[0]['rows']:,}; all DQ checks passed:"
          f" {all(s['dq_passed'] for s in service)}.")  # fmt: skip
    ratio_steps = med([s["focus_ms"] / s["load_ms"] for s in service])
    ratio_wall = med([i["focus"]["seconds"] / i["load"]["seconds"] for i in inproc])
    ratio_cpu = med([i["focus"]["cpu_seconds"] / i["load"]["cpu_seconds"] for i in inproc])
    print_table(
        ["measure", "load", "FOCUS build", "FOCUS / load", f"target <= {TARGET}"],
        [
            ["service: step duration_ms", f"{med([s['load_ms'] for s in service]) / 1000:.2f} s",
             f"{med([s['focus_ms'] for s in service]) / 1000:.2f} s", f"{ratio_steps:.2f}",
             "MET" if ratio_steps <= TARGET else "MISSED"],
            ["in-process: wall", f"{med([i['load']['seconds'] for i in inproc]):.2f} s",
             f"{med([i['focus']['seconds'] for i in inproc]):.2f} s", f"{ratio_wall:.2f}",
             "MET" if ratio_wall <= TARGET else "MISSED"],
            ["in-process: CPU", f"{med([i['load']['cpu_seconds'] for i in inproc]):.2f} s",
             f"{med([i['focus']['cpu_seconds'] for i in inproc]):.2f} s", f"{ratio_cpu:.2f}",
             "MET" if ratio_cpu <= TARGET else "MISSED"],
            ["diagnostic: the write alone, CPU", f"{med([i['load']['write_only_cpu_seconds'] for i in inproc]):.2f} s",
             f"{med([i['focus']['write_only_cpu_seconds'] for i in inproc]):.2f} s",
             f"{med([i['focus']['write_only_cpu_seconds'] / i['load']['write_only_cpu_seconds'] for i in inproc]):.2f}",
             "-"],
        ],
    )  # fmt: skip
    print(f"service: whole run (POST -> COMPLETED) median {med([s['seconds'] for s in service]):.2f} s")
    print()
    print("GET .../costs/focus of the day after attempt 1's run, streamed to nowhere (memory: the service's)")
    print_table(
        ["format", "size", "chunks", "time", "RSS before", "RSS after", "peak RSS before", "peak RSS after"],
        [
            [e["format"], f"{e['bytes'] / 2**20:,.0f} MiB", e["chunks"], f"{e['seconds']:.2f} s",
             mib(e["rss_before_kib"]), mib(e["rss_after_kib"]), mib(e["hwm_before_kib"]), mib(e["hwm_after_kib"])]
            for e in service[0]["exports"]
        ],
    )  # fmt: skip
    print_footer()
    if args.json:
        args.json.write_text(json.dumps({"service": service, "inproc": inproc}, indent=2, default=str))


if __name__ == "__main__":
    main()
