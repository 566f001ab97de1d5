"""Prometheus metrics of one process (``GET /metrics``): requests by route template and status with
a latency histogram, runs started and ended by pipeline and state, warehouse statements by kind, and
the work queue's depth by state.

Built once (in the services container) on a registry of its own. The request path only does a dict
lookup and one ``observe`` per request: label children are created once per (route, method, status)
and kept, and route labels are templates (``/api/v1/organizations/{org_slug}``), never raw paths, so
the number of series stays bounded whatever clients send.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED_ROUTE = "<unmatched>"
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STATEMENT_KINDS = {
    "SELECT": "SELECT",
    "WITH": "SELECT",
    "INSERT": "INSERT",
    "UPDATE": "UPDATE",
    "DELETE": "DELETE",
    "MERGE": "MERGE",
    "CREATE": "DDL",
    "ALTER": "DDL",
    "DROP": "DDL",
    "TRUNCATE": "DDL",
}


def statement_kind(sql: str) -> str:
    """SELECT, INSERT, UPDATE, DELETE, MERGE, DDL or OTHER, from the statement's first keyword."""
    head = sql.lstrip(" \t\r\n(").split(None, 1)
    return _STATEMENT_KINDS.get(head[0].upper(), "OTHER") if head else "OTHER"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Histogram(
            "convergence_http_request_duration_seconds",
            "HTTP requests by route template, method and status, with their latency.",
            ["route", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._runs_started = Counter(
            "convergence_runs_started",
            "Pipeline runs accepted (202), by pipeline.",
            ["pipeline"],
            registry=self.registry,
        )
        self._runs_ended = Counter(
            "convergence_runs_ended",
            "Pipeline runs that reached a final state, by pipeline and state.",
            ["pipeline", "state"],
            registry=self.registry,
        )
        self._statements = Counter(
            "convergence_warehouse_statements",
            "SQL statements sent to the warehouse, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self._queue = Gauge(
            "convergence_queue_items",
            "Items of the scheduler's work queue by state (as last read; refreshed on scrape).",
            ["state"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], Any] = {}

    # --- recording ---------------------------------------------------------------------------
    def observe_request(self, route: str | None, method: str, status: int, seconds: float) -> None:
        key = (route or UNMATCHED_ROUTE, method, status)
        child = self._children.get(key)
        if child is None:
            method_label = method if method in _METHODS else "OTHER"
            child = self._children[key] = self._requests.labels(key[0], method_label, str(status))
        child.observe(seconds)

    def run_started(self, pipeline: str) -> None:
        self._runs_started.labels(pipeline).inc()

    def run_ended(self, pipeline: str, state: str) -> None:
        self._runs_ended.labels(pipeline, state).inc()

    def count_statement(self, sql: str) -> None:
        self._statements.labels(statement_kind(sql)).inc()

    def set_queue_depth(self, counts: dict[str, int], states: tuple[str, ...]) -> None:
        for state in states:
            self._queue.labels(state).set(counts.get(state, 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
