"""A test peer that gives the local BigQuery emulator BigQuery's per-table DML limits.

bqemulator answers every statement in milliseconds, one at a time, and enforces no limit. This is a
small HTTP reverse proxy between google-cloud-bigquery clients (our service processes, the tests)
and the emulator's REST endpoint. It forwards every request unchanged (method, path, query string,
headers, body; a ``Location`` header that points at the emulator, as resumable uploads answer, is
rewritten to point at the proxy) and, for query jobs, parses the SQL (sqlglot, BigQuery dialect; a
script counts statement by statement) to hold each statement to the limits below, per target table.
Query jobs are answered asynchronously, as BigQuery answers them (see "How query jobs are answered").

Run it: ``python -m tests.bq_limits_proxy --upstream http://127.0.0.1:EMU --port N [--latency S]``
(from the repository root), or from a test with :class:`BigQueryLimitsProxy`. Control API on the
proxy itself: ``GET/POST /_proxy/config``, ``POST /_proxy/reset``, ``GET /_proxy/stats``,
``GET /_proxy/health`` (see :func:`_control`).

Rules enforced, and where Google documents them
-----------------------------------------------
* Mutating DML (UPDATE, DELETE, MERGE): at most 2 running per table, up to 20 more queued
  (PENDING), every further one fails with ``Resources exceeded during query execution: Too many DML
  statements outstanding against table PROJECT_ID:TABLE, limit is 20``.
  DML page, "Concurrent jobs" / "UPDATE, DELETE, MERGE DML concurrency":
  https://cloud.google.com/bigquery/docs/data-manipulation-language#update_delete_merge_dml_concurrency
  Quotas page, DML section (the same limits; a queued statement may wait up to 6 hours):
  https://cloud.google.com/bigquery/quotas#data-manipulation-language-statements
  Troubleshooting page, "Too many DML statements outstanding against table" (per table, mutating
  DML only, not INSERT):
  https://cloud.google.com/bigquery/docs/troubleshoot-quotas#ts-too-many-dml-statements-against-table-quota
  The HTTP status and reason (400, ``resourcesExceeded``) and where the error surfaces come from a
  real occurrence: jobs.insert succeeded, the error came while waiting for the job, as
  ``googleapi: Error 400: Resources exceeded during query execution: Too many DML statements
  outstanding against table mlab-sandbox:tmp_ndt.ndt5, limit is 20, resourcesExceeded``
  (https://github.com/m-lab/etl-gardener/issues/293, raised from ``Job.Wait`` in that repository's
  ops/actions.go). So a rejected statement is answered like BigQuery answers a failed job: jobs.insert
  returns the job already DONE with ``status.errorResult``; jobs.get returns it again and
  jobs.getQueryResults answers the HTTP error; jobs.query (``POST .../queries``) answers the HTTP
  error directly. google-cloud-bigquery raises ``BadRequest`` (400) from ``job.result()``.
* INSERT DML: per table, the first N in any 24 hours run at once (N = ``insert_free_per_day``,
  default 1,500, a rolling 24-hour window of this proxy's clock); after that at most 10 running,
  up to 100 queued, further ones fail. Same DML page, "Concurrent jobs" / "INSERT DML concurrency":
  https://cloud.google.com/bigquery/docs/data-manipulation-language
  Google documents no message for a full INSERT queue; the proxy uses the mutating-DML wording and
  reason with ``limit is 100`` (an assumption, the one string here not seen in a real answer).
* Concurrent-update conflicts (injected, see below): BigQuery fails a mutating statement whose
  snapshot was changed by a concurrent one (DML page, "DML statement conflicts", same URL as the
  first rule). The job fails (it does not commit, so the proxy does not forward it): 400,
  ``invalidQuery``, ``Could not serialize access to table PROJECT:DATASET.TABLE due to concurrent
  update``, body ``{"code": 400, "errors": [{"domain": "global", "message": ..., "reason":
  "invalidQuery"}], "message": ..., "status": "INVALID_ARGUMENT"}`` as reported in
  https://github.com/confluentinc/kafka-connect-bigquery/issues/279.
* Rate limits (injected): HTTP 403 on the API call (jobs.insert / jobs.query), reason
  ``rateLimitExceeded``, ``Exceeded rate limits: too many concurrent queries for this
  project_and_region. For more information, see https://cloud.google.com/bigquery/troubleshooting-errors``
  (message and reason: https://github.com/m-lab/etl-gardener/issues/141; that this limit comes back
  as ``403 Forbidden`` from the API call: https://github.com/googleapis/google-cloud-python/issues/6434;
  "quota errors return HTTP 403 Forbidden", ``rateLimitExceeded`` = short-term, retry with backoff,
  code 7 PERMISSION_DENIED = HTTP 403: https://cloud.google.com/bigquery/docs/troubleshoot-quotas).
* Server errors (injected): HTTP 500 (``INTERNAL``) or 503 (``UNAVAILABLE``), reason
  ``backendError``, ``Error encountered during execution. Retrying may solve the problem.``
  (backendError = 500, 503 or 504: https://cloud.google.com/bigquery/docs/error-messages; the exact 503
  body: https://github.com/unum-io/tyda/pull/86).

Error bodies have Google's JSON shape ``{"error": {"code", "message", "errors": [{"reason",
"message", "domain"}], "status"}}``; a failed job carries ``{"reason", "message"}`` in
``status.errorResult`` and ``status.errors`` (as the emulator's own failed jobs do).

A statement holds its table slot from admission until the emulator answered, plus ``latency``
seconds slept before forwarding (real DML takes about a second, the emulator milliseconds; with
``hold`` on, admitted statements also wait until it is switched off, so a test can line up a burst
whatever the machine's speed).

How query jobs are answered
---------------------------
BigQuery's jobs.insert "starts a new asynchronous job": it answers at once with the job PENDING or
RUNNING, and the client polls until the job is DONE (google-cloud-bigquery's ``QueryJob.result()``
alternates jobs.get and jobs.getQueryResults, which waits up to ``timeoutMs``; "By default, this limit
is 10 seconds ... If the query has not yet completed, jobComplete is false":
https://cloud.google.com/bigquery/docs/reference/rest/v2/jobs/insert and .../jobs/getQueryResults).
The emulator runs every statement inside the jobs.insert call, so the proxy does the waiting itself,
and a caller meets BigQuery's timing: jobs.insert returns at once, the statement's time (queue,
latency) is spent in the caller's polling (a thread blocked in ``job.result()``, or asyncio sleeps
between jobs.get calls), and a job can be cancelled while it waits.

* jobs.insert of a query (not a dry run): the statement is classified and the injected rate limits /
  5xx apply as before (HTTP errors, no job). Otherwise the proxy answers at once, HTTP 200, with the
  job: ``jobReference`` as the client sent it (a jobId generated if absent, location ``US`` if
  absent), ``configuration`` echoed (plus ``jobType``), ``status.state`` ``PENDING`` while it waits
  for a slot, ``RUNNING`` once admitted, ``statistics.creationTime`` (and ``startTime`` once
  admitted), ``id`` ``PROJECT:JOBID`` as the emulator spells it, a ``selfLink``. In the background it
  waits for its slot, ``hold`` and ``latency``, then forwards the same jobs.insert (same jobId) to the
  emulator, keeps its answer and gives the slot back. A statement refused at once (queue full) is
  answered DONE with the errorResult at insert, as before; a later refusal (a script's second
  table) or an injected conflict ends the job DONE with the errorResult.
* jobs.get: the job PENDING/RUNNING (no errorResult) until the background statement ended; then the
  emulator's job (forwarded), or the proxy's DONE job with its errorResult (refused, conflict,
  cancelled, or the emulator refused the insert itself with an HTTP error).
* jobs.getQueryResults: while the job runs, waits up to ``timeoutMs`` (default and at most 10 s)
  and answers ``{"kind": "bigquery#getQueryResultsResponse", "jobReference", "jobComplete": false}``
  if it still runs; once done, forwarded to the emulator, except for a failed job, answered with the
  HTTP error of its errorResult (the emulator answers 404 for the results of a job it failed; the
  status by reason is google-cloud-bigquery's: invalidQuery 400, notFound 404, ...).
* jobs.cancel ("This call will return immediately, and the client will need to poll for the job
  status": https://cloud.google.com/bigquery/docs/reference/rest/v2/jobs/cancel): a job still
  waiting (queued, held or sleeping its latency) is dropped, never forwarded, its slot or queue place
  freed, and answered ``{"kind": "bigquery#jobCancelResponse", "job": ...}`` with the job DONE and
  ``errorResult`` ``{"reason": "stopped", "message": "Job execution was cancelled: User requested
  cancellation"}`` (the errorResult a real cancelled job carries: dbt-bigquery's test looks its
  cancelled job up by exactly that reason and message in INFORMATION_SCHEMA.JOBS,
  https://github.com/dbt-labs/dbt-bigquery/blob/main/tests/functional/test_cancel.py; google-cloud-
  bigquery's job/base.py maps ``stopped`` to HTTP 200, so ``job.result()`` raises a plain
  ``GoogleAPICallError`` with ``code`` 200 for a job it reads DONE and stopped). jobs.get then
  answers that job and jobs.getQueryResults the error as HTTP 499 ``CANCELLED`` (an assumption:
  Google documents no status for it; 499 is google.rpc.Code CANCELLED's HTTP mapping,
  https://github.com/googleapis/googleapis/blob/master/google/rpc/code.proto). Statistics: outcome
  ``cancelled``, error_reason ``stopped``, no upstream_status. A job already forwarded has run (the
  emulator runs it to its end before answering): the cancel waits for that answer and goes to the
  emulator, which answers the job DONE as it ended.
* A jobId already used for an asynchronous job is refused as BigQuery refuses it: 409, ``duplicate``,
  ``Already Exists: Job PROJECT:LOCATION.JOBID``
  (https://github.com/googleapis/google-cloud-java/issues/2867); google-cloud-bigquery then fetches
  the existing job when it generated the id itself.
* Synchronous still: jobs.query (``POST .../queries``, ``Client.query_and_wait``) answers when the
  statement ran (BigQuery may also answer it complete within its ``timeoutMs``), dry runs, and
  load / copy / extract jobs. ``sync_jobs`` (control API, ``--sync-jobs``) restores the old
  jobs.insert: it answers when the statement ran, DONE.

Not modelled
------------
* Real conflict detection (two statements touching the same partitions): conflicts are injected
  only (probability or an exact next-K count), on mutating DML.
* Scripts: a multi-statement job takes one slot per (DML class, table) it writes, in table order,
  for the whole job; BigQuery runs each child statement as its own job, holding a slot only while it
  runs. Procedural blocks sqlglot cannot parse are scanned for ``UPDATE/DELETE/MERGE/INSERT <table>``.
* The 6-hour queue timeout, per-project query concurrency and queue limits, the table metadata
  update rate limit (5 per 10 s; DML is exempt), load/copy job quotas (load jobs are only counted),
  streaming inserts, sessions, BigQuery's own automatic retries of conflicting statements, batch
  priority, dry runs (forwarded without limits or injections), legacy SQL, jobs.list (rejected,
  cancelled and still running jobs exist only in this proxy: jobs.get and jobs.getQueryResults know
  them, jobs.list does not).
* A PENDING/RUNNING job carries no query statistics or progress (``statistics.query`` appears once
  DONE, from the emulator); a job is known by its jobId alone (project and location are not checked
  on jobs.get/getQueryResults/cancel); jobs.getQueryResults ignores its paging parameters while the
  job runs; a cancel never interrupts a statement the emulator is running (it runs in milliseconds);
  jobs.query and load jobs cannot be cancelled here.
* Injected rate limits and 5xx apply to query jobs (jobs.insert with a query, jobs.query), not to
  other API calls; an injected rate limit is always an HTTP 403, never a job ``errorResult``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import re
import subprocess
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import sqlglot
from sqlglot import exp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger("bq_limits_proxy")
logging.getLogger("sqlglot").setLevel(logging.ERROR)  # "falling back to parsing as a Command"

# --- BigQuery's words (sources in the module docstring) ---------------------------------------
DML_OUTSTANDING = (
    "Resources exceeded during query execution: Too many DML statements outstanding against table {table}, "
    "limit is {limit}"
)
CONCURRENT_UPDATE = "Could not serialize access to table {table} due to concurrent update"
RATE_LIMITED = (
    "Exceeded rate limits: too many concurrent queries for this project_and_region. "
    "For more information, see https://cloud.google.com/bigquery/troubleshooting-errors"
)
BACKEND_ERROR = "Error encountered during execution. Retrying may solve the problem."
CANCELLED = "Job execution was cancelled: User requested cancellation"
DUPLICATE_JOB = "Already Exists: Job {project}:{location}.{job_id}"
HTTP_FOR_REASON = {"resourcesExceeded": 400, "invalidQuery": 400, "rateLimitExceeded": 403, "backendError": 503}
# The HTTP status of a failed job's error, by reason, when jobs.getQueryResults answers it (a
# reason not listed: 400). As google-cloud-bigquery's job/base.py maps reasons, except ``stopped``
# (see CANCELLED in the module docstring).
JOB_ERROR_HTTP = {
    "accessDenied": 403,
    "backendError": 500,
    "billingNotEnabled": 403,
    "blocked": 403,
    "duplicate": 409,
    "internalError": 500,
    "notFound": 404,
    "notImplemented": 501,
    "quotaExceeded": 403,
    "rateLimitExceeded": 403,
    "responseTooLarge": 403,
    "badGateway": 502,
    "stopped": 499,
}
RPC_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
}
GET_QUERY_RESULTS_WAIT = 10.0  # jobs.getQueryResults: timeoutMs's default and the most waited here (s)

MUTATING = frozenset({"UPDATE", "DELETE", "MERGE"})
KINDS = ("SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "DDL", "OTHER", "SCRIPT", "LOAD", "COPY", "EXTRACT")
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
DAY = 86_400.0
_FALLBACK_DML = re.compile(
    r"\b(UPDATE|DELETE(?:\s+FROM)?|MERGE(?:\s+INTO)?|INSERT(?:\s+INTO)?)\s+"
    r"(?!(?:SET|WHERE|WHEN|THEN|ELSE|END|ROW|VALUES|SELECT|USING|AS)\b)"  # MERGE clauses, not tables
    r"(`[^`]+`(?:\.`[^`]+`)*|[\w$-]+(?:\.[\w$-]+)*)",
    re.I,
)
_JOBS = re.compile(r"^/bigquery/v2/projects/([^/]+)/jobs/?$")
_UPLOAD_JOBS = re.compile(r"^/upload/bigquery/v2/projects/([^/]+)/jobs/?$")
_QUERIES = re.compile(r"^/bigquery/v2/projects/([^/]+)/queries/?$")
_JOB = re.compile(r"^/bigquery/v2/projects/([^/]+)/jobs/([^/]+?)(/cancel)?/?$")
_QUERY_RESULTS = re.compile(r"^/bigquery/v2/projects/([^/]+)/queries/([^/]+)/?$")


# --- SQL -> statements -------------------------------------------------------------------------
@dataclass(frozen=True)
class Statement:
    kind: str  # one of KINDS
    table: str | None  # project.dataset.table, no backticks
    reads: tuple[str, ...] = ()  # the other tables it names (FROM, JOIN, USING, subqueries)


def _table_name(table: exp.Table | None, project: str, default_dataset: dict[str, Any] | None) -> str | None:
    if table is None or not table.name:
        return None
    parts = [p for p in (table.catalog, table.db, table.name) if p]
    # `p.d.t` quoted as one identifier arrives as one part with dots in some sqlglot versions.
    parts = [piece for p in parts for piece in p.split(".")]
    if len(parts) == 1:
        if not default_dataset or not default_dataset.get("datasetId"):
            return parts[0]  # a temp table or an unqualified name: keep it as written
        parts = [default_dataset["datasetId"], parts[0]]
    if len(parts) == 2:
        parts = [(default_dataset or {}).get("projectId") or project, *parts]
    return ".".join(parts)


def _target(node: exp.Expression) -> exp.Table | None:
    this = node.args.get("this")
    if isinstance(this, exp.Table):
        return this
    if isinstance(this, exp.Expression):
        found = this.find(exp.Table)
        if found is not None:
            return found
    return node.find(exp.Table)


def _reads(node: exp.Expression, target: str | None, project: str, dds: dict[str, Any] | None) -> tuple[str, ...]:
    names = {_table_name(t, project, dds) for t in node.find_all(exp.Table)}
    return tuple(sorted(n for n in names if n and n != target))


def _classify_node(node: exp.Expression, project: str, dds: dict[str, Any] | None) -> list[Statement]:
    found = _classify_target(node, project, dds)
    if len(found) == 1 and not isinstance(node, exp.Block | exp.Command):
        return [Statement(found[0].kind, found[0].table, _reads(node, found[0].table, project, dds))]
    return found


def _classify_target(node: exp.Expression, project: str, dds: dict[str, Any] | None) -> list[Statement]:
    if isinstance(node, exp.Block):
        return [s for child in node.expressions for s in _classify_node(child, project, dds)]
    if isinstance(node, exp.Command):
        return _fallback(node.sql(dialect="bigquery"), project, dds)
    kinds: list[tuple[type[exp.Expression], str]] = [
        (exp.Update, "UPDATE"),
        (exp.Delete, "DELETE"),
        (exp.Merge, "MERGE"),
        (exp.Insert, "INSERT"),
    ]
    for cls, kind in kinds:
        if isinstance(node, cls):
            return [Statement(kind, _table_name(_target(node), project, dds))]
    if isinstance(node, exp.Query):
        return [Statement("SELECT", None)]
    if isinstance(node, exp.Create | exp.Alter | exp.Drop | exp.TruncateTable):
        target = _target(node) if not isinstance(node, exp.TruncateTable) else node.find(exp.Table)
        return [Statement("DDL", _table_name(target, project, dds))]
    return [Statement("OTHER", None)]


def _fallback(sql: str, project: str, dds: dict[str, Any] | None) -> list[Statement]:
    """Procedural text sqlglot does not parse: find the DML statements in it by keyword."""
    found = []
    for match in _FALLBACK_DML.finditer(sql):
        kind = match.group(1).split()[0].upper()
        name = match.group(2).replace("`", "")
        try:
            table = sqlglot.parse_one(f"SELECT 1 FROM `{name}`", read="bigquery").find(exp.Table)
        except sqlglot.errors.SqlglotError:
            table = None
        found.append(Statement(kind, _table_name(table, project, dds)))
    return found or [Statement("OTHER", None)]


def classify(sql: str, project: str, default_dataset: dict[str, Any] | None = None) -> list[Statement]:
    """The statements of a query job's SQL, each with its kind and normalized target table."""
    try:
        nodes = [n for n in sqlglot.parse(sql, read="bigquery") if n is not None]
        statements = [s for node in nodes for s in _classify_node(node, project, default_dataset)]
    except Exception:  # whatever sqlglot makes of odd SQL, the request still goes through
        return _fallback(sql, project, default_dataset)
    return statements or [Statement("OTHER", None)]


def dml_class(kind: str) -> str | None:
    return "mutating" if kind in MUTATING else "insert" if kind == "INSERT" else None


def colon_name(table: str) -> str:
    """project.dataset.table -> project:dataset.table (how BigQuery names tables in these errors)."""
    project, _, rest = table.partition(".")
    return f"{project}:{rest}" if rest else table


# --- configuration -----------------------------------------------------------------------------
@dataclass
class Injection:
    probability: float = 0.0
    next: int = 0  # the next K matching statements get it, before the probability applies
    kinds: list[str] | None = None  # job kinds it applies to (None: all it can apply to)
    status: int = 503  # server_error only: 500 or 503

    def update(self, values: dict[str, Any], name: str) -> None:
        for key, value in values.items():
            if key == "probability":
                if not 0.0 <= float(value) <= 1.0:
                    raise ValueError(f"{name}.probability must be within [0, 1]")
                self.probability = float(value)
            elif key == "next":
                if int(value) < 0:
                    raise ValueError(f"{name}.next must be >= 0")
                self.next = int(value)
            elif key == "kinds":
                kinds = None if value is None else [str(k).upper() for k in value]
                if kinds is not None and set(kinds) - set(KINDS):
                    raise ValueError(f"{name}.kinds: unknown kind(s) {sorted(set(kinds) - set(KINDS))}")
                self.kinds = kinds
            elif key == "status" and name == "server_error":
                if int(value) not in (500, 503):
                    raise ValueError("server_error.status must be 500 or 503")
                self.status = int(value)
            else:
                raise ValueError(f"unknown setting {name}.{key}")

    def fires(self, kind: str, rng: random.Random) -> bool:
        if self.kinds is not None and kind not in self.kinds:
            return False
        if self.next > 0:
            self.next -= 1
            return True
        return self.probability > 0 and rng.random() < self.probability


@dataclass
class Config:
    latency: float = 0.0
    org_latency: dict[str, float] = field(default_factory=dict)  # extra latency of statements labelled org=…
    hold: bool = False  # admitted statements wait (holding their slots) until this is switched off
    sync_jobs: bool = False  # True: jobs.insert of a query answers only once the statement ran
    insert_free_per_day: int = 1500
    mutating_running: int = 2
    mutating_queued: int = 20
    insert_running: int = 10
    insert_queued: int = 100
    seed: int | None = None
    conflict: Injection = field(default_factory=Injection)
    rate_limit: Injection = field(default_factory=Injection)
    server_error: Injection = field(default_factory=Injection)

    def update(self, values: dict[str, Any]) -> None:
        numbers = {
            "latency",
            "insert_free_per_day",
            "mutating_running",
            "mutating_queued",
            "insert_running",
            "insert_queued",
        }
        for key, value in values.items():
            if key in numbers:
                number = float(value) if key == "latency" else int(value)
                if number < 0:
                    raise ValueError(f"{key} must be >= 0")
                setattr(self, key, number)
            elif key == "seed":
                self.seed = None if value is None else int(value)
            elif key == "org_latency":
                if not isinstance(value, dict) or any(float(v) < 0 for v in value.values()):
                    raise ValueError("org_latency must map org labels to seconds >= 0")
                self.org_latency = {str(k): float(v) for k, v in value.items()}
            elif key in ("hold", "sync_jobs"):
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false")
                setattr(self, key, value)
            elif key in ("conflict", "rate_limit", "server_error"):
                if not isinstance(value, dict):
                    raise ValueError(f"{key} must be an object")
                getattr(self, key).update(value, key)
            else:
                raise ValueError(f"unknown setting {key!r}")

    def as_dict(self) -> dict[str, Any]:
        def injection(i: Injection) -> dict[str, Any]:
            return {"probability": i.probability, "next": i.next, "kinds": i.kinds}

        return {
            "latency": self.latency,
            "org_latency": dict(self.org_latency),
            "hold": self.hold,
            "sync_jobs": self.sync_jobs,
            "insert_free_per_day": self.insert_free_per_day,
            "mutating_running": self.mutating_running,
            "mutating_queued": self.mutating_queued,
            "insert_running": self.insert_running,
            "insert_queued": self.insert_queued,
            "seed": self.seed,
            "conflict": injection(self.conflict),
            "rate_limit": injection(self.rate_limit),
            "server_error": {**injection(self.server_error), "status": self.server_error.status},
        }


# --- per-table slots ---------------------------------------------------------------------------
@dataclass
class Gate:
    running: int = 0
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)
    peak_running: int = 0
    peak_queued: int = 0
    admitted_at: deque[float] = field(default_factory=deque)  # INSERT: admissions in the last 24 h

    def note(self) -> None:
        self.peak_running = max(self.peak_running, self.running)
        self.peak_queued = max(self.peak_queued, len(self.waiters))


class Limits:
    """Running/queued statements per (DML class, table); everything runs on one event loop."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.gates: dict[tuple[str, str], Gate] = {}

    def _limits(self, cls: str) -> tuple[int, int]:
        c = self.config
        return (c.mutating_running, c.mutating_queued) if cls == "mutating" else (c.insert_running, c.insert_queued)

    async def acquire(self, cls: str, table: str, on_queued: Any = None) -> tuple[str, bool]:
        """('admitted' | 'queued' | 'rejected', ran on the free INSERT quota)."""
        gate = self.gates.setdefault((cls, table), Gate())
        running_limit, queue_limit = self._limits(cls)
        if cls == "insert":
            now = time.monotonic()
            while gate.admitted_at and gate.admitted_at[0] <= now - DAY:
                gate.admitted_at.popleft()
            if len(gate.admitted_at) < self.config.insert_free_per_day:
                gate.admitted_at.append(now)
                gate.running += 1
                gate.note()
                return "admitted", True
        if gate.running < running_limit and not gate.waiters:
            gate.running += 1
            gate.note()
            if cls == "insert":
                gate.admitted_at.append(time.monotonic())
            return "admitted", False
        if len(gate.waiters) >= queue_limit:
            return "rejected", False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        gate.waiters.append(waiter)
        gate.note()
        if on_queued is not None:
            on_queued()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter in gate.waiters:
                gate.waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                self.release(cls, table)  # the slot was handed over just before the cancel
            raise
        if cls == "insert":
            gate.admitted_at.append(time.monotonic())
        return "queued", False

    def release(self, cls: str, table: str) -> None:
        gate = self.gates[(cls, table)]
        gate.running -= 1
        running_limit, _ = self._limits(cls)
        while gate.waiters and gate.running < running_limit:
            waiter = gate.waiters.popleft()
            if not waiter.done():
                gate.running += 1
                waiter.set_result(None)
        gate.note()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        tables: dict[str, dict[str, Any]] = {}
        for (cls, table), gate in sorted(self.gates.items(), key=lambda item: (item[0][1], item[0][0])):
            tables.setdefault(table, {})[cls] = {
                "running": gate.running,
                "queued": len(gate.waiters),
                "peak_running": gate.peak_running,
                "peak_queued": gate.peak_queued,
                **({"admitted_last_24h": len(gate.admitted_at)} if cls == "insert" else {}),
            }
        return tables

    def reset(self) -> None:
        """Forget peaks and the INSERT day counts; slots held by statements in flight stay held."""
        for gate in self.gates.values():
            gate.admitted_at.clear()
            gate.peak_running = gate.running
            gate.peak_queued = len(gate.waiters)


# --- the proxy ---------------------------------------------------------------------------------
def _error(reason: str, message: str, code: int | None = None) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """(HTTP status, HTTP error body, job errorResult) for one of BigQuery's errors."""
    status = code or HTTP_FOR_REASON[reason]
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": RPC_STATUS.get(status, "UNKNOWN"),
        }
    }
    return status, body, {"reason": reason, "message": message}


def _millis(at: float) -> str:
    return str(int(at * 1000))


@dataclass
class AsyncJob:
    """A query job answered at jobs.insert and run in the background (see the module docstring)."""

    project: str
    reference: dict[str, Any]  # projectId, jobId, location
    configuration: dict[str, Any]
    entries: list[dict[str, Any]]
    base_url: str
    created_at: float = field(default_factory=time.time)
    state: str = "PENDING"  # PENDING (not admitted yet), RUNNING (admitted), DONE
    started_at: float | None = None
    forwarding: bool = False  # the insert went to the emulator: too late to cancel it here
    error: tuple[int, dict[str, Any]] | None = None  # a failed job: jobs.getQueryResults' HTTP error
    task: asyncio.Task[None] | None = None
    settled: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def job_id(self) -> str:
        return str(self.reference["jobId"])

    def settle(self) -> None:
        """Admitted or queued: jobs.insert may answer."""
        if not self.settled.done():
            self.settled.set_result(None)

    def resource(self) -> dict[str, Any]:
        """The job while it waits or runs (BigQuery's Job resource, as the emulator spells ``id``)."""
        statistics = {"creationTime": _millis(self.created_at)}
        if self.started_at is not None:
            statistics["startTime"] = _millis(self.started_at)
        location = self.reference.get("location")
        return {
            "kind": "bigquery#job",
            "id": f"{self.project}:{self.job_id}",
            "selfLink": f"{self.base_url}/bigquery/v2/projects/{self.project}/jobs/{self.job_id}"
            + (f"?location={location}" if location else ""),
            "jobReference": self.reference,
            "configuration": {"jobType": "QUERY", **self.configuration},
            "status": {"state": self.state},
            "statistics": statistics,
        }


class Proxy:
    def __init__(self, upstream: str, config: Config) -> None:
        self.upstream = upstream.rstrip("/")
        self.config = config
        self.rng = random.Random(config.seed)
        self.limits = Limits(config)
        self.statements: list[dict[str, Any]] = []
        self.requests: Counter[str] = Counter()
        self.failed_jobs: dict[str, dict[str, Any]] = {}  # jobId -> {"job": resource, "error": (status, body)}
        self.jobs: dict[str, AsyncJob] = {}  # jobId -> a query job answered at once (not sync_jobs)
        self.started = time.time()
        self.client: httpx.AsyncClient | None = None
        self.released: asyncio.Event | None = None  # set unless config.hold

    def sync_hold(self) -> None:
        if self.released is not None:
            if self.config.hold:
                self.released.clear()
            else:
                self.released.set()

    # -- bookkeeping ----------------------------------------------------------------------------
    def reset(self, config: bool = False) -> None:
        if config:
            self.config = Config()
            self.limits.config = self.config
        self.rng = random.Random(self.config.seed)
        self.statements = []
        self.requests = Counter()
        self.failed_jobs = {}
        self.jobs = {job_id: job for job_id, job in self.jobs.items() if not job.finished.is_set()}
        self.limits.reset()
        self.started = time.time()
        self.sync_hold()

    def _record(
        self,
        *,
        api: str,
        project: str | None = None,
        job_id: str | None,
        kind: str,
        table: str | None,
        labels: dict[str, str],
        parent: str | None = None,
        index: int | None = None,
        dry_run: bool = False,
        reads: tuple[str, ...] = (),
        sql: str | None = None,
    ) -> dict[str, Any]:
        entry = {
            "seq": len(self.statements) + 1,
            "api": api,
            "project": project,
            "job_id": job_id,
            "kind": kind,
            "table": table,
            "reads": list(reads),
            "sql": sql[:4000] if sql else None,
            "script_kind": parent,
            "index": index,
            "labels": labels,
            "org": labels.get("org"),
            "run_id": labels.get("run_id"),
            "dry_run": dry_run,
            "state": "submitted",
            "outcome": None,
            "injected": None,
            "free_insert": False,
            "error_reason": None,
            "upstream_status": None,
            "submitted_at": time.time(),
            "admitted_at": None,
            "finished_at": None,
            "waited_s": None,
        }
        self.statements.append(entry)
        return entry

    def stats(self, filters: dict[str, str]) -> dict[str, Any]:
        rows = self.statements
        for key in ("project", "org", "run_id", "kind", "table", "job_id", "outcome"):
            if key in filters:
                rows = [r for r in rows if str(r.get(key)) == filters[key]]
        counts: dict[tuple[str, str | None], Counter[str]] = {}
        for row in rows:
            counter = counts.setdefault((row["kind"], row["table"]), Counter())
            counter["total"] += 1
            counter[row["outcome"] or "in_flight"] += 1
        return {
            "since": self.started,
            "counts": [
                {
                    "kind": kind,
                    "table": table,
                    "total": c["total"],
                    "admitted": c["admitted"],
                    "queued": c["queued"],
                    "rejected": c["rejected"],
                    "injected": c["injected"],
                    "cancelled": c["cancelled"],
                    "in_flight": c["in_flight"],
                }
                for (kind, table), c in sorted(counts.items(), key=lambda item: (item[0][0], item[0][1] or ""))
            ],
            "by_kind": dict(sorted(Counter(r["kind"] for r in rows).items())),
            "tables": self.limits.snapshot(),
            "requests": dict(sorted(self.requests.items())),
            "statements": rows,
            "config": self.config.as_dict(),
        }

    # -- HTTP -------------------------------------------------------------------------------------
    async def forward(self, request: Request, body: bytes) -> Response:
        assert self.client is not None
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string") or b""
        url = self.upstream + raw_path.decode("latin-1") + (("?" + query.decode("latin-1")) if query else "")
        headers = [(k, v) for k, v in request.headers.raw if k.decode("latin-1").lower() not in HOP_BY_HOP]
        upstream_request = self.client.build_request(request.method, url, headers=headers, content=body)
        upstream = await self.client.send(upstream_request, stream=True)
        try:
            raw = b"".join([chunk async for chunk in upstream.aiter_raw()])
        finally:
            await upstream.aclose()
        response = Response(content=raw, status_code=upstream.status_code)
        out: list[tuple[bytes, bytes]] = []
        for key, value in upstream.headers.multi_items():
            if key.lower() in HOP_BY_HOP:
                continue
            if key.lower() == "location":
                value = self._rewrite_location(value, request)
            out.append((key.encode("latin-1"), value.encode("latin-1")))
        out.append((b"content-length", str(len(raw)).encode()))
        response.raw_headers = out
        return response

    def _rewrite_location(self, location: str, request: Request) -> str:
        loc, up = urlsplit(location), urlsplit(self.upstream)
        local = {"127.0.0.1", "localhost", "::1"}
        same_host = loc.hostname == up.hostname or (loc.hostname in local and up.hostname in local)
        if loc.scheme and same_host and (loc.port or 80) == (up.port or 80):
            host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
            return urlunsplit((request.url.scheme, host, loc.path, loc.query, loc.fragment))
        return location

    @staticmethod
    def _json_error(status: int, body: dict[str, Any]) -> Response:
        return JSONResponse(body, status_code=status)

    def _route(self, method: str, path: str) -> str:
        if method == "POST" and _JOBS.match(path):
            return "jobs.insert"
        if _UPLOAD_JOBS.match(path):
            return "upload.start" if method == "POST" else f"upload.{method.lower()}"
        if method == "POST" and _QUERIES.match(path):
            return "jobs.query"
        if method == "GET" and _QUERY_RESULTS.match(path):
            return "jobs.getQueryResults"
        match = _JOB.match(path)
        if match:
            return "jobs.cancel" if match.group(3) else f"jobs.{method.lower()}"
        return f"{method} other"

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        if path.startswith("/_proxy/"):
            return await _control(self, request)
        body = await request.body()
        route = self._route(request.method, path)
        self.requests[route] += 1
        if route in ("jobs.get", "jobs.getQueryResults", "jobs.cancel"):
            match = _JOB.match(path) or _QUERY_RESULTS.match(path)
            job_id = match.group(2) if match else None
            job = self.jobs.get(job_id) if job_id else None
            if job is not None and not job.finished.is_set():
                if route == "jobs.get":
                    return JSONResponse(job.resource())
                if route == "jobs.getQueryResults" and not await self._wait_for(job, request):
                    return JSONResponse(
                        {
                            "kind": "bigquery#getQueryResultsResponse",
                            "jobReference": job.reference,
                            "jobComplete": False,
                        }
                    )
                if route == "jobs.cancel":
                    await self._cancel(job)
            failed = self.failed_jobs.get(job_id) if job_id else None
            if failed is not None:
                if route == "jobs.get":
                    return JSONResponse(failed["job"])
                if route == "jobs.cancel":
                    return JSONResponse({"kind": "bigquery#jobCancelResponse", "job": failed["job"]})
                return self._json_error(*failed["error"])
            if route == "jobs.getQueryResults" and job is not None and job.error is not None:
                return self._json_error(*job.error)  # the emulator answers 404 for a failed job's results
        if route in ("jobs.insert", "jobs.query", "upload.start"):
            payload: Any = None
            if body.lstrip()[:1] == b"{":
                with contextlib.suppress(ValueError):
                    payload = json.loads(body)
            elif route == "upload.start":  # a multipart upload: metadata part, then the data
                payload = _multipart_metadata(body)
            if isinstance(payload, dict):
                project = (_JOBS.match(path) or _UPLOAD_JOBS.match(path) or _QUERIES.match(path)).group(1)  # type: ignore[union-attr]
                return await self._job_request(request, body, route, project, payload)
        try:
            return await self.forward(request, body)
        except httpx.HTTPError as exc:
            return _upstream_down(exc)

    async def _job_request(
        self, request: Request, body: bytes, route: str, project: str, payload: dict[str, Any]
    ) -> Response:
        if route == "jobs.query":
            sql, labels = payload.get("query"), payload.get("labels") or {}
            default_dataset, dry_run = payload.get("defaultDataset"), bool(payload.get("dryRun"))
            job_id, legacy = None, payload.get("useLegacySql") is True
        else:
            configuration = payload.get("configuration") or {}
            labels = configuration.get("labels") or {}
            job_id = (payload.get("jobReference") or {}).get("jobId")
            dry_run = bool(configuration.get("dryRun"))
            query_config = configuration.get("query")
            if not isinstance(query_config, dict):
                kind = next((k.upper() for k in ("load", "copy", "extract") if k in configuration), "OTHER")
                spec = configuration.get("load") or configuration.get("copy") or {}
                dest = spec.get("destinationTable") or {}
                table = ".".join(dest[k] for k in ("projectId", "datasetId", "tableId") if dest.get(k)) or None
                entry = self._record(
                    api=route, project=project, job_id=job_id, kind=kind, table=table, labels=labels, dry_run=dry_run
                )
                return await self._forward_recorded(request, body, [entry])
            sql, default_dataset = query_config.get("query"), query_config.get("defaultDataset")
            legacy = query_config.get("useLegacySql") is True
        asynchronous = route == "jobs.insert" and not dry_run and not self.config.sync_jobs
        if asynchronous:
            reference = payload.get("jobReference")
            if not isinstance(reference, dict):
                reference = payload["jobReference"] = {}
            if not reference.get("jobId"):  # the emulator must run it under the id the client was given
                job_id = reference["jobId"] = f"bqproxy_{uuid.uuid4().hex}"
                body = json.dumps(payload).encode()
            if job_id in self.jobs:  # BigQuery: a job id is used once
                location = reference.get("location") or "US"
                message = DUPLICATE_JOB.format(
                    project=reference.get("projectId") or project, location=location, job_id=job_id
                )
                return self._json_error(*_error("duplicate", message, 409)[:2])
        statements = classify(sql, project, default_dataset) if isinstance(sql, str) and not legacy else []
        statements = statements or [Statement("OTHER", None)]
        if len(statements) == 1:
            entries = [
                self._record(
                    api=route,
                    project=project,
                    job_id=job_id,
                    kind=statements[0].kind,
                    table=statements[0].table,
                    labels=labels,
                    dry_run=dry_run,
                    reads=statements[0].reads,
                    sql=sql if isinstance(sql, str) else None,
                )
            ]
            job_kind = statements[0].kind
        else:
            job_kind = "SCRIPT"
            entries = [
                self._record(
                    api=route,
                    project=project,
                    job_id=job_id,
                    kind="SCRIPT",
                    table=None,
                    labels=labels,
                    dry_run=dry_run,
                )
            ]
            entries += [
                self._record(
                    api=route,
                    project=project,
                    job_id=job_id,
                    kind=s.kind,
                    table=s.table,
                    labels=labels,
                    parent="SCRIPT",
                    index=i,
                    dry_run=dry_run,
                    reads=s.reads,
                )
                for i, s in enumerate(statements)
            ]
        if dry_run:
            return await self._forward_recorded(request, body, entries)

        # The API call itself can fail before any job exists.
        config = self.config
        if config.rate_limit.fires(job_kind, self.rng):
            return self._inject_http(entries, "rateLimitExceeded", _error("rateLimitExceeded", RATE_LIMITED))
        if config.server_error.fires(job_kind, self.rng):
            status = config.server_error.status
            return self._inject_http(entries, "backendError", _error("backendError", BACKEND_ERROR, status))

        if not asynchronous:
            return await self._run_statement(request, body, route, project, payload, entries, statements, job_kind)
        job = AsyncJob(
            project=project,
            reference={"projectId": project, "location": "US", **payload["jobReference"]},
            configuration=payload.get("configuration") or {},
            entries=entries,
            base_url=str(request.base_url).rstrip("/"),
        )
        self.jobs[job.job_id] = job
        while len(self.jobs) > 10_000:
            oldest = next(iter(self.jobs))
            if not self.jobs[oldest].finished.is_set():
                break
            self.jobs.pop(oldest)
        statement = self._run_statement(request, body, route, project, payload, entries, statements, job_kind, job)
        job.task = asyncio.create_task(self._run_job(job, statement))
        await asyncio.wait({job.task, job.settled}, return_when=asyncio.FIRST_COMPLETED)
        if job.task.done() and job.job_id in self.failed_jobs:  # refused at once (queue full): DONE
            return JSONResponse(self.failed_jobs[job.job_id]["job"])
        return JSONResponse(job.resource())

    async def _run_statement(
        self,
        request: Request,
        body: bytes,
        route: str,
        project: str,
        payload: dict[str, Any],
        entries: list[dict[str, Any]],
        statements: list[Statement],
        job_kind: str,
        job: AsyncJob | None = None,
    ) -> Response:
        """Admission, hold, latency, injected conflict, then the emulator: the statement's answer.
        With ``job`` (an asynchronous jobs.insert) it runs in the background and tells the job when
        it was queued, admitted and forwarded."""
        # Admission: one slot per (DML class, table), taken in a fixed order (no deadlock).
        needed = sorted(
            {(c, s.table) for s in statements if s.table and (c := dml_class(s.kind))},
            key=lambda item: (item[1], item[0]),
        )
        held: list[tuple[str, str]] = []
        outcome, free = "admitted", False

        def mark_queued() -> None:
            for entry in entries:
                entry["state"] = "queued"
            if job is not None:
                job.settle()  # PENDING

        try:
            for cls, table in needed:
                result, was_free = await self.limits.acquire(cls, table, on_queued=mark_queued)
                if result == "rejected":
                    _, queue_limit = self.limits._limits(cls)
                    message = DML_OUTSTANDING.format(table=colon_name(table), limit=queue_limit)
                    return self._fail_job(
                        route, project, payload, entries, "rejected", _error("resourcesExceeded", message)
                    )
                held.append((cls, table))
                free = free or was_free
                if result == "queued":
                    outcome = "queued"
            now = time.time()
            for entry in entries:
                entry.update(
                    state="running", admitted_at=now, waited_s=round(now - entry["submitted_at"], 4), free_insert=free
                )
            if job is not None:
                job.state, job.started_at = "RUNNING", now
                job.settle()
            if self.released is not None:
                await self.released.wait()
            slow_orgs = self.config.org_latency
            delay = self.config.latency + max((slow_orgs.get(e.get("org") or "", 0.0) for e in entries), default=0.0)
            if delay:
                await asyncio.sleep(delay)
            mutated = [t for c, t in needed if c == "mutating"]
            if mutated and self.config.conflict.fires(job_kind, self.rng):
                message = CONCURRENT_UPDATE.format(table=colon_name(mutated[0]))
                for entry in entries:
                    entry["injected"] = "conflict"
                return self._fail_job(route, project, payload, entries, "injected", _error("invalidQuery", message))
            if job is not None:
                job.forwarding = True
            return await self._forward_recorded(request, body, entries, outcome=outcome)
        finally:
            for cls, table in held:
                self.limits.release(cls, table)

    # -- asynchronous query jobs -----------------------------------------------------------------
    async def _run_job(self, job: AsyncJob, statement: Coroutine[Any, Any, Response]) -> None:
        """The background half of an asynchronous jobs.insert: run it, keep how it ended."""
        try:
            response = await statement
        except asyncio.CancelledError:  # jobs.cancel (or the proxy shutting down) before it was forwarded
            statement.close()  # (if it was cancelled before it started)
            self._cancelled(job)
            return
        except Exception as exc:  # never leave a job RUNNING forever
            log.exception("job %s failed in the proxy", job.job_id)
            response = self._json_error(
                *_error("backendError", f"bq_limits_proxy: {type(exc).__name__}: {exc}", 500)[:2]
            )
        finally:
            job.settle()
        try:
            self._finished(job, response)
        finally:  # whatever the answer was, pollers and cancels stop waiting
            job.state = "DONE"
            job.finished.set()

    def _finished(self, job: AsyncJob, response: Response) -> None:
        if job.job_id not in self.failed_jobs:  # (a rejected or conflicting job is there already)
            answer: Any = {}
            raw = bytes(response.body)
            if raw[:1] == b"{":
                with contextlib.suppress(ValueError):
                    answer = json.loads(raw)
            if response.status_code >= 300:  # the emulator refused the insert (or was unreachable)
                error = answer.get("error") or {}
                first = (error.get("errors") or [{}])[0]
                reason = first.get("reason") or "backendError"
                message = first.get("message") or error.get("message") or f"HTTP {response.status_code}"
                body = answer if error else _error(reason, message, response.status_code)[1]
                self._store_failed(job, {"reason": reason, "message": message}, (response.status_code, body))
            elif error_result := (answer.get("status") or {}).get("errorResult"):
                # The emulator failed it (DONE with errorResult): its results answer the error.
                reason, message = error_result.get("reason") or "invalidQuery", error_result.get("message") or ""
                status, body, _ = _error(reason, message, JOB_ERROR_HTTP.get(reason, 400))
                job.error = (status, body)

    def _store_failed(self, job: AsyncJob, error_result: dict[str, Any], error: tuple[int, Any]) -> None:
        now = time.time()
        statistics = {"creationTime": _millis(job.created_at), "endTime": _millis(now)}
        if job.started_at is not None:
            statistics["startTime"] = _millis(job.started_at)
        resource = {
            **job.resource(),
            "status": {"state": "DONE", "errorResult": error_result, "errors": [error_result]},
            "statistics": statistics,
        }
        self.failed_jobs[job.job_id] = {"job": resource, "error": error}
        while len(self.failed_jobs) > 10_000:
            self.failed_jobs.pop(next(iter(self.failed_jobs)))

    def _cancelled(self, job: AsyncJob) -> None:
        """Dropped before it reached the emulator: DONE, ``stopped``; it never ran."""
        now = time.time()
        job.state = "DONE"
        for entry in job.entries:
            entry.update(state="done", outcome="cancelled", error_reason="stopped", finished_at=now)
        status, body, error_result = _error("stopped", CANCELLED, 499)
        self._store_failed(job, error_result, (status, body))
        job.finished.set()

    async def _cancel(self, job: AsyncJob) -> None:
        """jobs.cancel of a job this proxy still holds: one still waiting (queued, held or sleeping
        its latency) is dropped; one already forwarded ran (the emulator runs it to its end): wait
        for its answer, then the cancel goes on to the emulator."""
        if not job.forwarding and job.task is not None and not job.task.done():
            job.task.cancel()
        await job.finished.wait()

    async def _wait_for(self, job: AsyncJob, request: Request) -> bool:
        """jobs.getQueryResults: wait up to ``timeoutMs`` (10 s at most) for the job to finish."""
        try:
            wait = min(max(float(request.query_params.get("timeoutMs", "")) / 1000, 0.0), GET_QUERY_RESULTS_WAIT)
        except ValueError:
            wait = GET_QUERY_RESULTS_WAIT
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(job.finished.wait(), wait)
        return job.finished.is_set()

    async def _forward_recorded(
        self, request: Request, body: bytes, entries: list[dict[str, Any]], outcome: str = "admitted"
    ) -> Response:
        now = time.time()
        for entry in entries:
            if entry["admitted_at"] is None:
                entry.update(state="running", admitted_at=now, waited_s=0.0)
        try:
            response = await self.forward(request, body)
        except httpx.HTTPError as exc:
            for entry in entries:
                entry.update(state="done", outcome=outcome, finished_at=time.time(), error_reason=type(exc).__name__)
            return _upstream_down(exc)
        answer: dict[str, Any] = {}
        if response.body[:1] == b"{":
            with contextlib.suppress(ValueError):
                answer = json.loads(response.body)
        error_result = (answer.get("status") or {}).get("errorResult") or {}
        job_id = (answer.get("jobReference") or {}).get("jobId")  # jobs.query: the job it created
        for entry in entries:
            entry.update(
                state="done",
                outcome=outcome,
                finished_at=time.time(),
                upstream_status=response.status_code,
                error_reason=error_result.get("reason") if response.status_code < 300 else None,
                job_id=entry["job_id"] or job_id,
            )
        return response

    def _inject_http(self, entries: list[dict[str, Any]], injected: str, error: tuple[int, Any, Any]) -> Response:
        now = time.time()
        for entry in entries:
            entry.update(
                state="done",
                outcome="injected",
                injected=injected,
                error_reason=error[2]["reason"],
                finished_at=now,
                upstream_status=None,
            )
        return self._json_error(error[0], error[1])

    def _fail_job(
        self,
        route: str,
        project: str,
        payload: dict[str, Any],
        entries: list[dict[str, Any]],
        outcome: str,
        error: tuple[int, Any, Any],
    ) -> Response:
        """The job ran (or was refused) and ended DONE with an errorResult, as BigQuery reports it."""
        status, body, error_result = error
        now = time.time()
        for entry in entries:
            entry.update(state="done", outcome=outcome, error_reason=error_result["reason"], finished_at=now)
        if route == "jobs.query":  # jobs.query answers a failed query as an HTTP error
            return self._json_error(status, body)
        reference = dict(payload.get("jobReference") or {})
        reference.setdefault("projectId", project)
        reference.setdefault("jobId", f"bqproxy_{uuid.uuid4().hex}")
        reference.setdefault("location", "US")
        millis = str(int(now * 1000))
        job = {
            "kind": "bigquery#job",
            "id": f"{reference['projectId']}:{reference['location']}.{reference['jobId']}",
            "jobReference": reference,
            "configuration": payload.get("configuration") or {},
            "status": {"state": "DONE", "errorResult": error_result, "errors": [error_result]},
            "statistics": {"creationTime": millis, "startTime": millis, "endTime": millis},
        }
        self.failed_jobs[reference["jobId"]] = {"job": job, "error": (status, body)}
        while len(self.failed_jobs) > 10_000:
            self.failed_jobs.pop(next(iter(self.failed_jobs)))
        for entry in entries:
            entry["job_id"] = reference["jobId"]
        return JSONResponse(job)


def _upstream_down(exc: Exception) -> Response:
    """The emulator did not answer: a 502 (which google-cloud-bigquery retries), saying so."""
    message = f"bq_limits_proxy: upstream unreachable: {type(exc).__name__}: {exc}"
    body = {
        "code": 502,
        "message": message,
        "errors": [{"message": message, "domain": "global", "reason": "badGateway"}],
    }
    return JSONResponse({"error": {**body, "status": "UNAVAILABLE"}}, status_code=502)


def _multipart_metadata(body: bytes) -> dict[str, Any] | None:
    """The JSON part of a multipart upload's body (a load job's configuration)."""
    start = body.find(b"{")
    if start < 0:
        return None
    with contextlib.suppress(ValueError):
        value, _ = json.JSONDecoder().raw_decode(body[start:].decode("utf-8", "replace"))
        return value if isinstance(value, dict) else None
    return None


async def _control(proxy: Proxy, request: Request) -> Response:
    """The control API.

    * ``GET /_proxy/health``: ``{"ok": true}`` once serving.
    * ``GET /_proxy/config``; ``POST /_proxy/config`` with a JSON object of settings to change:
      ``latency`` (s), ``hold`` (true: admitted statements wait, holding their slots, until it is
      set back to false, so a test can line a burst up before anything finishes), ``sync_jobs``
      (true: jobs.insert of a query answers only once the statement ran, the old behaviour),
      ``insert_free_per_day``, ``mutating_running``, ``mutating_queued``, ``insert_running``,
      ``insert_queued``, ``seed``, and ``conflict`` / ``rate_limit`` / ``server_error`` objects of
      ``probability``, ``next`` (the next K matching jobs), ``kinds`` (job kinds it applies to),
      and for ``server_error`` ``status`` (500 or 503). Unknown settings answer 400.
    * ``POST /_proxy/reset``: forgets statements, request counts, peaks, INSERT day counts and
      rejected, cancelled and finished jobs (jobs still waiting or running stay known); ``?config=1``
      also restores the default settings.
    * ``GET /_proxy/stats``: counts by (kind, table), per-table slots and peaks, request counts by
      API method, and every statement (with the ``project`` its job ran in); filters ``project``,
      ``org``, ``run_id``, ``kind``, ``table``, ``job_id``, ``outcome``.
    """
    name, method = request.url.path.removeprefix("/_proxy/").strip("/"), request.method
    if name == "health":
        return JSONResponse({"ok": True, "upstream": proxy.upstream})
    if name == "config" and method == "GET":
        return JSONResponse(proxy.config.as_dict())
    if name == "config" and method == "POST":
        try:
            values = json.loads(await request.body() or b"{}")
            if not isinstance(values, dict):
                raise ValueError("a JSON object is required")
            proxy.config.update(values)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if "seed" in values:
            proxy.rng = random.Random(proxy.config.seed)
        proxy.sync_hold()
        return JSONResponse(proxy.config.as_dict())
    if name == "reset" and method == "POST":
        proxy.reset(config=request.query_params.get("config") in ("1", "true"))
        return JSONResponse({"ok": True, "config": proxy.config.as_dict()})
    if name == "stats" and method == "GET":
        return JSONResponse(proxy.stats(dict(request.query_params)))
    return JSONResponse({"error": f"no control endpoint {method} {request.url.path}"}, status_code=404)


def build_app(upstream: str, config: Config | None = None) -> Starlette:
    proxy = Proxy(upstream, config or Config())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
            proxy.client = client
            proxy.released = asyncio.Event()
            proxy.sync_hold()
            yield
        proxy.client = None

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    app = Starlette(routes=[Route("/{path:path}", proxy.handle, methods=methods)], lifespan=lifespan)
    app.state.proxy = proxy
    return app


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="the emulator's REST endpoint, e.g. http://127.0.0.1:9050")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds slept before forwarding a statement")
    parser.add_argument("--insert-free-per-day", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--sync-jobs", action="store_true", help="jobs.insert of a query answers once it ran (not at once)"
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(list(argv) if argv is not None else None)
    import uvicorn

    config = Config(
        latency=args.latency, insert_free_per_day=args.insert_free_per_day, seed=args.seed, sync_jobs=args.sync_jobs
    )
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    uvicorn.run(
        build_app(args.upstream, config),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        timeout_keep_alive=60,
    )


# --- for tests: run it as its own process ------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]


class ProxyUnavailable(RuntimeError):
    pass


class BigQueryLimitsProxy:
    """``python -m tests.bq_limits_proxy`` on a free loopback port, in front of ``upstream``.

    ``endpoint`` is what clients use as ``api_endpoint``; ``configure``/``reset``/``stats`` wrap
    the control API."""

    def __init__(
        self,
        upstream: str,
        log_dir: Path,
        *,
        latency: float = 0.0,
        sync_jobs: bool = False,
        python: str = sys.executable,
    ) -> None:
        from tests.server import free_port

        self._free_port = free_port
        self.upstream = upstream
        self.latency = latency
        self.sync_jobs = sync_jobs
        self.python = python
        self.port = free_port()
        self.log_path = log_dir / "bq_limits_proxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        for attempt in range(2):
            try:
                self._start(timeout)
                return
            except ProxyUnavailable:
                if attempt or "address already in use" not in self.log_path.read_text(errors="replace").lower():
                    raise
                self.port = self._free_port()  # the port was taken between choosing and binding it

    def _start(self, timeout: float) -> None:
        log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                self.python,
                "-m",
                "tests.bq_limits_proxy",
                "--upstream",
                self.upstream,
                "--port",
                str(self.port),
                "--latency",
                str(self.latency),
                *(["--sync-jobs"] if self.sync_jobs else []),
            ],
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log_file.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ProxyUnavailable(f"proxy exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{self.endpoint}/_proxy/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise ProxyUnavailable(f"proxy not ready after {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _call(self, method: str, name: str, **kwargs: Any) -> dict[str, Any]:
        response = httpx.request(method, f"{self.endpoint}/_proxy/{name}", timeout=10, **kwargs)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change settings, e.g. ``configure(latency=0.3, conflict={"next": 1})``."""
        return self._call("POST", "config", json=settings)

    def reset(self, *, config: bool = False) -> dict[str, Any]:
        return self._call("POST", "reset", params={"config": "1"} if config else None)

    def stats(self, **filters: str) -> dict[str, Any]:
        return self._call("GET", "stats", params=filters or None)

    def __enter__(self) -> BigQueryLimitsProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()
