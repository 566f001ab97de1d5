"""The BigQuery limits proxy (tests/bq_limits_proxy.py) in front of the local emulator.

The official google-cloud-bigquery client and the service's own ``BigQueryWarehouse`` talk to the
proxy; these tests prove the proxy holds statements to BigQuery's per-table DML limits, answers
with BigQuery's errors, injects conflicts / rate limits / 5xx, answers query jobs at once and lets
clients poll and cancel them, passes resumable uploads through, and counts statements by kind and
table.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from src.core.engine.base import QueryOptions
from src.core.engine.bigquery_backend import BigQueryWarehouse, translate_error
from src.core.engine.schema import SchemaField
from src.core.errors import TerminalWarehouseError, TransientWarehouseError, WarehouseError, WarehouseNotFoundError
from tests.bq_limits_proxy import CANCELLED, BigQueryLimitsProxy
from tests.bqemulator import BigQueryEmulator

pytestmark = pytest.mark.bigquery

PROJECT = "convergence-test"
RETRY = bigquery.DEFAULT_RETRY.with_deadline(5)
OUTSTANDING = "Resources exceeded during query execution: Too many DML statements outstanding against table"
_names = itertools.count(1)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigQueryEmulator]:
    emu = BigQueryEmulator(tmp_path_factory.mktemp("bqemulator-limits"))
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def started_proxy(
    emulator: BigQueryEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BigQueryLimitsProxy]:
    with BigQueryLimitsProxy(emulator.endpoint, tmp_path_factory.mktemp("bq-limits-proxy")) as proxy:
        yield proxy


@pytest.fixture
def proxy(started_proxy: BigQueryLimitsProxy) -> BigQueryLimitsProxy:
    """The shared proxy with default settings and empty stats."""
    started_proxy.reset(config=True)
    return started_proxy


def new_client(endpoint: str) -> bigquery.Client:
    return bigquery.Client(
        project=PROJECT, credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=endpoint)
    )


def new_table(client: bigquery.Client) -> str:
    """A fresh ``project.dataset.table`` (id INT64, v STRING) holding the row (1, 'a')."""
    n = next(_names)
    dataset = f"limits_{n}"
    client.create_dataset(dataset, exists_ok=True, retry=RETRY)
    table = f"{PROJECT}.{dataset}.t{n}"
    schema = [bigquery.SchemaField("id", "INT64"), bigquery.SchemaField("v", "STRING")]
    client.create_table(bigquery.Table(table, schema=schema), retry=RETRY)
    client.query(f"INSERT INTO `{table}` (id, v) VALUES (1, 'a')", retry=RETRY).result(retry=RETRY)
    return table


def colon(table: str) -> str:
    project, rest = table.split(".", 1)
    return f"{project}:{rest}"


class Burst:
    """Statements sent at the same moment, each from its own thread and client (jobs.insert, then
    ``result()``); ``join()`` gives each one's job or exception, in order."""

    def __init__(self, endpoint: str, sqls: list[str]) -> None:
        self.sqls = sqls
        self.clients = [new_client(endpoint) for _ in sqls]
        self.barrier = threading.Barrier(len(sqls))
        self.results: list[Any] = [None] * len(sqls)
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(len(sqls))]

    def _run(self, i: int) -> None:
        self.barrier.wait()
        try:
            job = self.clients[i].query(self.sqls[i], retry=RETRY)
            job.result(retry=RETRY)
            self.results[i] = job
        except Exception as exc:  # collected and asserted on
            self.results[i] = exc

    def start(self) -> Burst:
        for thread in self.threads:
            thread.start()
        return self

    def join(self, timeout: float = 60.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "burst did not finish"
        return self.results


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def lined_up(proxy: BigQueryLimitsProxy, table: str, cls: str, running: int, queued: int, rejected: int) -> bool:
    """The table's slots hold ``running`` statements and ``queued`` wait, ``rejected`` were refused."""
    stats = proxy.stats(table=table)
    gate = stats["tables"].get(table, {}).get(cls, {})
    refused = sum(c["rejected"] for c in stats["counts"])
    return (gate.get("running"), gate.get("queued"), refused) == (running, queued, rejected)


def burst(proxy: BigQueryLimitsProxy, sqls: list[str], line_up: Callable[[], bool] | None = None) -> list[Any]:
    """Send ``sqls`` at once. With ``line_up``, the proxy holds admitted statements until it is
    true, so the outcome does not depend on how fast threads start on a busy machine."""
    if line_up is None:
        return Burst(proxy.endpoint, sqls).start().join()
    proxy.configure(hold=True)
    running = Burst(proxy.endpoint, sqls).start()
    try:
        wait_for(line_up)
    finally:
        proxy.configure(hold=False)
    return running.join()


def max_overlap(rows: list[dict[str, Any]]) -> int:
    """Most statements holding a slot at the same moment, from their admitted/finished times."""
    events = [(r["admitted_at"], 1) for r in rows if r["admitted_at"]] + [
        (r["finished_at"], -1) for r in rows if r["admitted_at"]
    ]
    running = peak = 0
    for _, step in sorted(events):  # at equal times the end (-1) sorts first
        running += step
        peak = max(peak, running)
    return peak


def count(stats: dict[str, Any], kind: str, table: str | None) -> dict[str, Any]:
    return next(c for c in stats["counts"] if c["kind"] == kind and c["table"] == table)


def warehouse(endpoint: str) -> BigQueryWarehouse:
    return BigQueryWarehouse(
        project=PROJECT,
        location="US",
        api_endpoint=endpoint,
        maximum_bytes_billed=10**12,
        timeout_seconds=60,
        retry_deadline_seconds=5,
    )


def run_async(main: Callable[[], Any]) -> Any:
    """asyncio.run with a thread pool big enough for the warehouse's concurrent calls."""

    async def wrapped() -> Any:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=40))
        return await main()

    return asyncio.run(wrapped())


# --- mutating DML: 2 running, 20 queued, the rest fail -----------------------------------------
def test_25_concurrent_updates_on_one_table_run_2_queue_20_and_reject_3(proxy: BigQueryLimitsProxy) -> None:
    client = new_client(proxy.endpoint)
    table = new_table(client)
    proxy.reset()
    proxy.configure(latency=0.3)

    sqls = [f"UPDATE `{table}` SET v = '{i}' WHERE id = 1" for i in range(25)]
    results = burst(proxy, sqls, line_up=lambda: lined_up(proxy, table, "mutating", 2, 20, 3))

    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 3, errors
    for exc in errors:
        assert isinstance(exc, gexc.BadRequest)
        assert exc.code == 400
        assert exc.errors[0]["reason"] == "resourcesExceeded"
        assert exc.message.startswith(f"{OUTSTANDING} {colon(table)}, limit is 20")
        assert isinstance(translate_error(exc), TransientWarehouseError)  # the queue drains: retry later
    stats = proxy.stats(table=table)
    assert stats["tables"][table]["mutating"]["peak_running"] == 2
    assert stats["tables"][table]["mutating"]["peak_queued"] == 20
    updates = count(stats, "UPDATE", table)
    assert (updates["admitted"], updates["queued"], updates["rejected"]) == (2, 20, 3)
    assert max_overlap(stats["statements"]) == 2
    # The slowest queued statement waited for ten rounds of two: real queueing, not a counter.
    assert max(r["waited_s"] for r in stats["statements"] if r["outcome"] == "queued") >= 9 * 0.3

    # A rejected job is a DONE job with BigQuery's errorResult, also for jobs.get.
    rejected = next(r for r in stats["statements"] if r["outcome"] == "rejected")
    job = client.get_job(rejected["job_id"], retry=RETRY)
    assert job.state == "DONE"
    assert job.error_result["reason"] == "resourcesExceeded"


def test_25_concurrent_updates_through_the_warehouse(proxy: BigQueryLimitsProxy) -> None:
    table = new_table(new_client(proxy.endpoint))
    proxy.reset()
    proxy.configure(latency=0.3, hold=True)

    async def main() -> list[Any]:
        wh = warehouse(proxy.endpoint)
        await wh.start()
        try:
            options = QueryOptions(org_slug="acme", run_id="burst-1")
            sql = f"UPDATE `{table}` SET v = @v WHERE id = 1"
            calls = asyncio.gather(
                *(wh.execute(sql, {"v": str(i)}, options=options) for i in range(25)), return_exceptions=True
            )
            try:
                await asyncio.to_thread(wait_for, lambda: lined_up(proxy, table, "mutating", 2, 20, 3))
            finally:
                proxy.configure(hold=False)
            return await calls
        finally:
            await wh.close()

    results = run_async(main)

    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 3, errors
    assert all(isinstance(e, WarehouseError) and f"{OUTSTANDING} {colon(table)}, limit is 20" in str(e) for e in errors)
    stats = proxy.stats(run_id="burst-1")
    assert stats["tables"][table]["mutating"]["peak_running"] == 2
    assert stats["tables"][table]["mutating"]["peak_queued"] == 20
    updates = count(stats, "UPDATE", table)
    assert (updates["admitted"], updates["queued"], updates["rejected"]) == (2, 20, 3)
    assert max_overlap(stats["statements"]) == 2
    assert {r["org"] for r in stats["statements"]} == {"acme"}


def test_dml_queue_full_is_a_transient_warehouse_error(proxy: BigQueryLimitsProxy) -> None:
    table = new_table(new_client(proxy.endpoint))
    proxy.reset()
    proxy.configure(hold=True)

    async def main() -> list[Any]:
        wh = warehouse(proxy.endpoint)
        await wh.start()
        try:
            sql = f"DELETE FROM `{table}` WHERE id = 99"
            calls = asyncio.gather(*(wh.execute(sql) for _ in range(23)), return_exceptions=True)
            try:
                await asyncio.to_thread(wait_for, lambda: lined_up(proxy, table, "mutating", 2, 20, 1))
            finally:
                proxy.configure(hold=False)
            return await calls
        finally:
            await wh.close()

    errors = [r for r in run_async(main) if isinstance(r, BaseException)]
    assert len(errors) == 1 and f"{OUTSTANDING} {colon(table)}, limit is 20" in str(errors[0])
    assert isinstance(errors[0], TransientWarehouseError), type(errors[0])


def test_updates_on_two_tables_do_not_block_each_other(proxy: BigQueryLimitsProxy) -> None:
    client = new_client(proxy.endpoint)
    table_a, table_b = new_table(client), new_table(client)
    proxy.reset()
    proxy.configure(latency=0.5)

    merge_b = f"MERGE `{table_b}` T USING (SELECT 1 AS id) S ON T.id = S.id WHEN MATCHED THEN UPDATE SET v = 'y'"
    sqls = [f"UPDATE `{table_a}` SET v = 'x' WHERE id = 1"] * 3 + [merge_b] * 2

    def both_lined_up() -> bool:  # A: two running, one waiting; B: two running all the same
        return lined_up(proxy, table_a, "mutating", 2, 1, 0) and lined_up(proxy, table_b, "mutating", 2, 0, 0)

    results = burst(proxy, sqls, line_up=both_lined_up)

    assert not [r for r in results if isinstance(r, Exception)]
    stats = proxy.stats()
    on_a = sorted((r for r in stats["statements"] if r["table"] == table_a), key=lambda r: r["admitted_at"])
    on_b = [r for r in stats["statements"] if r["table"] == table_b]
    # A: two ran, the third waited for one of them to finish.
    assert [r["outcome"] for r in on_a] == ["admitted", "admitted", "queued"]
    assert on_a[2]["admitted_at"] >= min(r["finished_at"] for r in on_a[:2])
    # B: its two MERGEs never waited, whatever A was doing.
    assert [(r["kind"], r["outcome"]) for r in on_b] == [("MERGE", "admitted")] * 2
    assert stats["tables"][table_b]["mutating"] == {"running": 0, "queued": 0, "peak_running": 2, "peak_queued": 0}
    assert stats["tables"][table_a]["mutating"]["peak_queued"] == 1


# --- INSERT: free quota, then 10 running / 100 queued -------------------------------------------
def test_insert_without_free_quota_runs_10_queues_100_and_rejects_the_rest(proxy: BigQueryLimitsProxy) -> None:
    table = new_table(new_client(proxy.endpoint))
    proxy.reset()
    proxy.configure(latency=0.3, insert_free_per_day=0)

    sqls = [f"INSERT INTO `{table}` (id, v) VALUES ({i}, 'n')" for i in range(115)]
    results = burst(proxy, sqls, line_up=lambda: lined_up(proxy, table, "insert", 10, 100, 5))

    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 5, errors[:3]
    assert all(isinstance(e, gexc.BadRequest) and e.errors[0]["reason"] == "resourcesExceeded" for e in errors)
    assert all(e.message.startswith(f"{OUTSTANDING} {colon(table)}, limit is 100") for e in errors)
    stats = proxy.stats(table=table)
    gate = stats["tables"][table]["insert"]
    assert (gate["peak_running"], gate["peak_queued"]) == (10, 100)
    inserts = count(stats, "INSERT", table)
    assert (inserts["admitted"], inserts["queued"], inserts["rejected"]) == (10, 100, 5)
    assert max_overlap(stats["statements"]) == 10
    rows = new_client(proxy.endpoint).query(f"SELECT COUNT(*) AS n FROM `{table}`", retry=RETRY).result(retry=RETRY)
    assert next(iter(rows))["n"] == 1 + 110


def test_insert_free_quota_runs_the_first_n_at_once(proxy: BigQueryLimitsProxy) -> None:
    table = new_table(new_client(proxy.endpoint))  # its INSERT used one of the day's free slots
    proxy.configure(latency=0.3, insert_free_per_day=13)

    sqls = [f"INSERT INTO `{table}` (id, v) VALUES ({i}, 'f')" for i in range(14)]
    results = burst(proxy, sqls, line_up=lambda: lined_up(proxy, table, "insert", 12, 2, 0))

    assert not [r for r in results if isinstance(r, Exception)]
    stats = proxy.stats(table=table, kind="INSERT")
    gate = stats["tables"][table]["insert"]
    assert gate["peak_running"] == 12  # above the limit of 10: the free quota runs at once
    assert gate["peak_queued"] == 2  # the 14th and 15th of the day waited for the limit of 10
    assert sum(r["free_insert"] for r in stats["statements"]) == 1 + 12
    assert gate["admitted_last_24h"] == 15


# --- injected errors -----------------------------------------------------------------------------
def test_injected_errors_come_back_as_bigquery_errors(proxy: BigQueryLimitsProxy) -> None:
    client = new_client(proxy.endpoint)
    table = new_table(client)
    update = f"UPDATE `{table}` SET v = 'changed' WHERE id = 1"

    proxy.configure(conflict={"next": 1})
    with pytest.raises(gexc.BadRequest) as conflict:
        client.query(update, retry=RETRY, job_retry=None).result(retry=RETRY, job_retry=None)
    assert conflict.value.errors[0]["reason"] == "invalidQuery"
    assert conflict.value.message.startswith(
        f"Could not serialize access to table {colon(table)} due to concurrent update"
    )
    assert isinstance(translate_error(conflict.value), TransientWarehouseError)
    value = client.query(f"SELECT v FROM `{table}` WHERE id = 1", retry=RETRY).result(retry=RETRY)
    assert next(iter(value))["v"] == "a"  # a conflicting statement does not commit

    proxy.configure(conflict={"next": 1})  # jobs.query answers the failed query as an HTTP 400
    with pytest.raises(gexc.BadRequest, match="due to concurrent update"):
        client.query_and_wait(update, retry=RETRY, job_retry=None)

    proxy.configure(rate_limit={"next": 1})
    with pytest.raises(gexc.Forbidden) as limited:
        client.query("SELECT 1", retry=None, job_retry=None)
    assert limited.value.code == 403 and limited.value.errors[0]["reason"] == "rateLimitExceeded"
    assert "Exceeded rate limits: too many concurrent queries for this project_and_region" in limited.value.message
    assert isinstance(translate_error(limited.value), TransientWarehouseError)

    for status, exc_class in ((500, gexc.InternalServerError), (503, gexc.ServiceUnavailable)):
        proxy.configure(server_error={"next": 1, "status": status})
        with pytest.raises(exc_class) as failed:
            client.query("SELECT 1", retry=None, job_retry=None)
        assert failed.value.errors[0]["reason"] == "backendError"
        assert ": Error encountered during execution. Retrying may solve the problem." in failed.value.message
        assert isinstance(translate_error(failed.value), TransientWarehouseError)

    stats = proxy.stats(table=table, kind="UPDATE")
    assert [r["injected"] for r in stats["statements"]] == ["conflict", "conflict"]
    assert proxy.stats(outcome="injected")["by_kind"] == {"SELECT": 3, "UPDATE": 2}


def test_the_warehouse_retries_rate_limits_and_5xx_but_reports_conflicts(proxy: BigQueryLimitsProxy) -> None:
    table = new_table(new_client(proxy.endpoint))
    proxy.reset()

    async def main() -> tuple[Any, ...]:
        wh = warehouse(proxy.endpoint)
        await wh.start()
        try:
            proxy.configure(rate_limit={"next": 1}, server_error={"next": 1, "status": 503})
            rows = await wh.query(f"SELECT COUNT(*) AS n FROM `{table}`")
            proxy.configure(conflict={"next": 1})
            try:
                await wh.execute(f"DELETE FROM `{table}` WHERE id = 1")
            except WarehouseError as exc:
                return rows, exc
            return rows, None
        finally:
            await wh.close()

    rows, error = run_async(main)

    assert rows == [{"n": 1}]  # the client retried the 403 rateLimitExceeded and the 503
    assert isinstance(error, TransientWarehouseError) and "due to concurrent update" in str(error)
    selects = proxy.stats(kind="SELECT")["statements"]
    assert [r["injected"] for r in selects] == ["rateLimitExceeded", "backendError", None]
    assert len({r["job_id"] for r in selects}) == 1  # the same job, sent three times


def test_injection_probability_is_seedable(proxy: BigQueryLimitsProxy) -> None:
    client = new_client(proxy.endpoint)

    def pattern() -> list[bool]:
        proxy.reset()
        proxy.configure(seed=7, server_error={"probability": 0.5})
        outcomes = []
        for _ in range(12):
            try:
                client.query("SELECT 1", retry=None, job_retry=None).result(retry=None)
                outcomes.append(True)
            except gexc.ServiceUnavailable:
                outcomes.append(False)
        return outcomes

    first = pattern()
    assert first == pattern()
    assert True in first and False in first


# --- uploads and stats ------------------------------------------------------------------------------
def test_resumable_load_jobs_go_through_the_proxy(proxy: BigQueryLimitsProxy, tmp_path: Path) -> None:
    client = new_client(proxy.endpoint)
    table = new_table(client)
    proxy.reset()

    config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON)
    data = io.BytesIO(b'{"id": 2, "v": "b"}\n{"id": 3, "v": "c"}\n')
    job = client.load_table_from_file(data, table, job_config=config)  # no size=: a resumable upload
    job.result(retry=RETRY)
    assert job.state == "DONE" and job.error_result is None

    path = tmp_path / "rows.ndjson"
    path.write_text('{"id": 4, "v": "d"}\n')
    schema = (SchemaField(name="id", type="INT64"), SchemaField(name="v", type="STRING"))

    async def main() -> int:
        wh = warehouse(proxy.endpoint)
        await wh.start()
        try:
            return await wh.load_ndjson(wh.table(*table.split(".")[1:]), schema, path, truncate=False)
        finally:
            await wh.close()

    run_async(main)  # (its output_rows is the table's row count on the emulator: not asserted)
    rows = client.query(f"SELECT COUNT(*) AS n FROM `{table}`", retry=RETRY).result(retry=RETRY)
    assert next(iter(rows))["n"] == 4
    stats = proxy.stats()
    assert count(stats, "LOAD", table)["total"] == 2
    # The upload's data went to the Location the proxy rewrote, not straight to the emulator.
    assert stats["requests"]["upload.start"] == 2 and stats["requests"]["upload.put"] >= 2


def test_stats_count_a_runs_statements_by_kind_and_table(proxy: BigQueryLimitsProxy) -> None:
    table = new_table(new_client(proxy.endpoint))
    other = new_table(new_client(proxy.endpoint))
    proxy.reset()

    async def main() -> None:
        wh = warehouse(proxy.endpoint)
        await wh.start()
        try:
            run = QueryOptions(org_slug="acme", run_id="run-42")
            await wh.execute(f"INSERT INTO `{table}` (id, v) VALUES (2, 'b')", options=run)
            await wh.execute(f"UPDATE `{table}` SET v = 'c' WHERE id = 2", options=run)
            await wh.query(f"SELECT * FROM `{table}`", options=run)
            ref = wh.table(*table.split(".")[1:])
            await wh.replace_rows(ref, ["id", "v"], "SELECT 5 AS id, 'e' AS v", replace_where="{t}.id = 5", options=run)
            await wh.execute(
                f"BEGIN TRANSACTION; DELETE FROM `{other}` WHERE id = 1; INSERT INTO `{other}` (id, v) "
                f"VALUES (9, 'z'); COMMIT TRANSACTION;",
                options=run,
            )
            await wh.execute(
                f"UPDATE `{other}` SET v = 'other run' WHERE id = 9",
                options=QueryOptions(org_slug="acme", run_id="run-43"),
            )
        finally:
            await wh.close()

    run_async(main)

    stats = proxy.stats(run_id="run-42")
    counts = {(c["kind"], c["table"]): c["total"] for c in stats["counts"]}
    assert counts == {
        ("INSERT", table): 1,
        ("UPDATE", table): 1,
        ("SELECT", None): 1,
        ("MERGE", table): 1,
        ("SCRIPT", None): 1,
        ("OTHER", None): 2,  # BEGIN TRANSACTION, COMMIT TRANSACTION
        ("DELETE", other): 1,
        ("INSERT", other): 1,
    }
    assert {r["org"] for r in stats["statements"]} == {"acme"}
    script = [r for r in stats["statements"] if r["script_kind"] == "SCRIPT"]
    assert [r["kind"] for r in script] == ["OTHER", "DELETE", "INSERT", "OTHER"]
    assert proxy.stats(run_id="run-43")["by_kind"] == {"UPDATE": 1}
    assert proxy.stats()["tables"][other]["mutating"]["peak_running"] == 1


def test_control_api_rejects_unknown_settings(proxy: BigQueryLimitsProxy) -> None:
    response = httpx.post(f"{proxy.endpoint}/_proxy/config", json={"latencyy": 1})
    assert response.status_code == 400 and "latencyy" in response.json()["error"]
    assert proxy.configure(latency=0.25)["latency"] == 0.25
    started = time.monotonic()
    new_client(proxy.endpoint).query("SELECT 1", retry=RETRY).result(retry=RETRY)
    assert time.monotonic() - started >= 0.25
    assert proxy.reset(config=True)["config"]["latency"] == 0.0


# --- asynchronous query jobs: answered at once, polled, cancellable ----------------------------------
def test_a_query_job_is_answered_at_once_and_polled_until_done(proxy: BigQueryLimitsProxy) -> None:
    client = new_client(proxy.endpoint)
    table = new_table(client)
    proxy.reset()
    proxy.configure(latency=1.0, hold=True)  # the statement cannot finish before the test lets it

    started = time.monotonic()
    try:
        job = client.query(f"SELECT id, v FROM `{table}`", retry=RETRY)  # answered while held: no waiting
        assert job.state == "RUNNING" and job.error_result is None
        assert job.created is not None and job.started is not None and job.ended is None
        assert not job.done(retry=RETRY)  # jobs.get: still RUNNING
    finally:
        proxy.configure(hold=False)
    rows = [dict(r.items()) for r in job.result(retry=RETRY)]
    assert time.monotonic() - started >= 1.0
    assert rows == [{"id": 1, "v": "a"}]
    assert job.state == "DONE" and job.statement_type == "SELECT"
    requests = proxy.stats()["requests"]
    assert requests["jobs.get"] >= 2 and requests["jobs.getQueryResults"] >= 1
    # The job id the client chose is the one the emulator ran it under.
    assert proxy.stats(job_id=job.job_id)["statements"][0]["upstream_status"] == 200
    # A job id is used once: inserting it again is BigQuery's 409 duplicate.
    again = httpx.post(
        f"{proxy.endpoint}/bigquery/v2/projects/{PROJECT}/jobs",
        json={
            "jobReference": {"projectId": PROJECT, "jobId": job.job_id},
            "configuration": {"query": {"query": "SELECT 1"}},
        },
    )
    assert again.status_code == 409 and again.json()["error"]["errors"][0]["reason"] == "duplicate"

    proxy.configure(sync_jobs=True, latency=0.3)  # the old behaviour, on demand
    started = time.monotonic()
    job = client.query("SELECT 2 AS n", retry=RETRY)
    assert time.monotonic() - started >= 0.3 and job.state == "DONE"
    assert [r["n"] for r in job.result(retry=RETRY)] == [2]


def test_12_concurrent_slow_statements_each_return_from_query_at_once(proxy: BigQueryLimitsProxy) -> None:
    table = new_table(new_client(proxy.endpoint))
    proxy.reset()
    proxy.configure(latency=1.0, hold=True)  # nothing can finish before the test lets it
    clients = [new_client(proxy.endpoint) for _ in range(12)]
    barrier = threading.Barrier(12)
    submitted: list[tuple[float, str | None]] = [(0.0, None)] * 12
    results: list[Any] = [None] * 12

    def run(i: int) -> None:
        barrier.wait()
        try:
            started = time.monotonic()
            job = clients[i].query(f"SELECT {i} AS n, v FROM `{table}`", retry=RETRY)
            submitted[i] = (time.monotonic() - started, job.state)
            results[i] = [dict(r.items()) for r in job.result(retry=RETRY)]
        except Exception as exc:  # collected and asserted on
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(12)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: all(state for _, state in submitted), timeout=15)  # with every statement held
        assert proxy.stats()["requests"]["jobs.insert"] == 12
    finally:
        proxy.configure(hold=False)
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads)

    assert [state for _, state in submitted] == ["RUNNING"] * 12  # every query() returned while all were held
    assert results == [[{"n": i, "v": "a"}] for i in range(12)]
    assert max_overlap(proxy.stats(kind="SELECT")["statements"]) == 12


def test_cancelling_a_sleeping_statement_drops_it_before_it_runs(
    proxy: BigQueryLimitsProxy, emulator: BigQueryEmulator
) -> None:
    client = new_client(proxy.endpoint)
    table = new_table(client)
    proxy.reset()
    proxy.configure(latency=1.0)

    job = client.query(f"UPDATE `{table}` SET v = 'changed' WHERE id = 1", retry=RETRY, job_retry=None)
    assert job.state == "RUNNING"
    assert job.cancel(retry=RETRY)  # jobs.cancel answers the job: DONE, stopped
    assert job.state == "DONE" and job.error_result == {"reason": "stopped", "message": CANCELLED}
    with pytest.raises(gexc.GoogleAPICallError) as stopped:
        job.result(retry=RETRY, job_retry=None)
    assert stopped.value.errors[0]["reason"] == "stopped" and CANCELLED in stopped.value.message
    assert isinstance(translate_error(stopped.value), TerminalWarehouseError)

    # Every client sees the job DONE and stopped; its results answer the error (499 CANCELLED).
    seen = new_client(proxy.endpoint).get_job(job.job_id, retry=RETRY)
    assert seen.state == "DONE" and seen.error_result["reason"] == "stopped"
    results = httpx.get(f"{proxy.endpoint}/bigquery/v2/projects/{PROJECT}/queries/{job.job_id}")
    assert results.status_code == 499 and results.json()["error"]["status"] == "CANCELLED"
    # It never reached the emulator, and never will.
    assert httpx.get(f"{emulator.endpoint}/bigquery/v2/projects/{PROJECT}/jobs/{job.job_id}").status_code == 404
    value = client.query(f"SELECT v FROM `{table}` WHERE id = 1", retry=RETRY).result(retry=RETRY)  # >= 1 s later
    assert next(iter(value))["v"] == "a"
    (row,) = proxy.stats(kind="UPDATE")["statements"]
    assert (row["outcome"], row["error_reason"], row["upstream_status"]) == ("cancelled", "stopped", None)
    assert count(proxy.stats(), "UPDATE", table)["cancelled"] == 1
    assert proxy.stats()["tables"][table]["mutating"]["running"] == 0  # its slot was given back

    # A job the emulator already ran: the cancel goes to the emulator, the job stays a success.
    done = client.query("SELECT 1 AS n", retry=RETRY)
    done.result(retry=RETRY)
    assert client.cancel_job(done.job_id, retry=RETRY).error_result is None


def test_cancelling_a_queued_statement_frees_its_place_and_it_never_runs(proxy: BigQueryLimitsProxy) -> None:
    client = new_client(proxy.endpoint)
    table = new_table(client)
    proxy.reset()
    proxy.configure(hold=True)
    try:
        running = [client.query(f"UPDATE `{table}` SET v = 'r' WHERE id = 1", retry=RETRY) for _ in range(2)]
        queued = client.query(f"DELETE FROM `{table}` WHERE id = 1", retry=RETRY, job_retry=None)
        assert [j.state for j in running] == ["RUNNING", "RUNNING"] and queued.state == "PENDING"
        assert lined_up(proxy, table, "mutating", 2, 1, 0)

        waiting: list[Any] = []  # a client already waiting for the job in jobs.getQueryResults
        waiter = threading.Thread(target=lambda: waiting.append(_outcome(queued)), daemon=True)
        waiter.start()
        wait_for(lambda: proxy.stats()["requests"].get("jobs.getQueryResults", 0) >= 1)
        cancelled = new_client(proxy.endpoint).cancel_job(queued.job_id, retry=RETRY)  # another client
        assert cancelled.state == "DONE" and cancelled.error_result["reason"] == "stopped"
        waiter.join(10)
        assert lined_up(proxy, table, "mutating", 2, 0, 0)
    finally:
        proxy.configure(hold=False)

    # The waiting client's getQueryResults answered the error: google-cloud-bigquery raises Cancelled.
    assert len(waiting) == 1 and isinstance(waiting[0], gexc.Cancelled), waiting
    assert waiting[0].errors[0]["reason"] == "stopped" and CANCELLED in waiting[0].message
    for job in running:
        job.result(retry=RETRY)
    rows = client.query(f"SELECT id, v FROM `{table}`", retry=RETRY).result(retry=RETRY)
    assert [dict(r.items()) for r in rows] == [{"id": 1, "v": "r"}]  # the DELETE never ran
    deletes = proxy.stats(kind="DELETE")["statements"]
    assert [(r["outcome"], r["upstream_status"]) for r in deletes] == [("cancelled", None)]
    assert proxy.stats()["tables"][table]["mutating"]["peak_queued"] == 1


def _outcome(job: bigquery.QueryJob) -> Any:
    try:
        return job.result(retry=RETRY, job_retry=None)
    except Exception as exc:  # returned and asserted on
        return exc


@pytest.mark.parametrize("sync_jobs", [False, True], ids=["async", "sync"])
def test_the_warehouse_works_through_the_proxy_with_latency(proxy: BigQueryLimitsProxy, sync_jobs: bool) -> None:
    table = new_table(new_client(proxy.endpoint))
    proxy.reset()
    proxy.configure(latency=0.3, sync_jobs=sync_jobs)

    async def main() -> tuple[Any, ...]:
        wh = warehouse(proxy.endpoint)
        await wh.start()
        try:
            options = QueryOptions(org_slug="acme", run_id="slow-1")
            affected = await wh.execute(f"UPDATE `{table}` SET v = @v WHERE id = 1", {"v": "w"}, options=options)
            rows = await wh.query(f"SELECT id, v FROM `{table}`", options=options)
            errors = []
            for sql in (f"SELECT * FROM `{PROJECT}.no_such_dataset.t`", "SELEC 1"):
                try:
                    await wh.query(sql)
                except WarehouseError as exc:
                    errors.append(exc)
            return affected, rows, errors
        finally:
            await wh.close()

    affected, rows, errors = run_async(main)

    assert affected == 1
    assert rows == [{"id": 1, "v": "w"}]
    # A job the emulator fails surfaces as it did when jobs.insert answered it DONE.
    assert [type(e) for e in errors] == [WarehouseNotFoundError, TerminalWarehouseError]
    assert "no_such_dataset" in str(errors[0]) and "Syntax error" in str(errors[1])
    stats = proxy.stats(run_id="slow-1")
    assert [(r["kind"], r["outcome"]) for r in stats["statements"]] == [("UPDATE", "admitted"), ("SELECT", "admitted")]
