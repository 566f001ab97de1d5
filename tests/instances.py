"""Several service processes on one warehouse, as Cloud Run runs several instances on one BigQuery.

``Cluster.start(backend, tmp, count, seed, **env)`` makes a fresh project on the session's emulator
(seeded with the demo export if asked), starts ``count`` real service processes on it (``python -m
src.app``, ``tests/server.py``), each with its own port and ``INSTANCE_ID`` and all through the
session's BigQuery-limits proxy (``tests/bq_limits_proxy.py``), and bootstraps the central dataset
once. The in-process scheduler loop is off (``SCHEDULER_LOOP_ENABLED=false``): tests call trigger and
process-queue themselves, as Cloud Scheduler does. DuckDB allows one process per file, so this is
BigQuery-only (tests using it are marked ``bigquery``). Tests drive it over HTTP only (black box):

* ``cluster.apis[i]`` — an ``Api`` on instance ``i`` whose every response is recorded in
  ``cluster.calls`` (so a test can assert that no request got a 5xx);
* ``at_once(...)`` — fire calls at the same moment, one thread each, behind a barrier;
* ``cluster.configure_proxy(latency=…)`` — change the shared proxy's settings for this cluster; the
  values it had are put back by ``cluster.stop()``;
* ``cluster.stats(**filters)`` — the proxy's statements of this cluster's project only;
  ``limit_errors(stats)`` — the limit errors the proxy raised among them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.backends import BigQueryBackend, Seed
from tests.server import Api, ServerProcess

T = TypeVar("T")

# Outcomes of a proxy statement that mean "BigQuery refused it": a full DML queue (rejected) or an
# injected conflict / rate limit / 5xx (injected).
LIMIT_OUTCOMES = ("rejected", "injected")
# What never ends on its own: a queue item in these states still has work to do.
OPEN_QUEUE_STATES = ("QUEUED", "RUNNING", "RETRY")


@dataclass(frozen=True)
class Call:
    instance: int
    method: str
    path: str
    status: int
    body: str


@dataclass
class CallLog:
    """Every HTTP response the cluster's clients received (thread-safe)."""

    calls: list[Call] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hook(self, instance: int) -> Callable[[httpx.Response], None]:
        def record(response: httpx.Response) -> None:
            body = ""
            if response.status_code >= 500:
                response.read()
                body = response.text[:500]
            call = Call(instance, response.request.method, response.request.url.path, response.status_code, body)
            with self._lock:
                self.calls.append(call)

        return record

    def server_errors(self) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.status >= 500]


class RecordedApi(Api):
    """``Api`` whose responses go to a ``CallLog``; long timeout (process-queue answers when its runs end)."""

    def __init__(self, server: ServerProcess, log: CallLog, instance: int) -> None:
        super().__init__(server)
        self.http.close()
        self.instance = instance
        self.http = httpx.Client(
            base_url=server.base_url, timeout=600.0, event_hooks={"response": [log.hook(instance)]}
        )


class Cluster:
    """``count`` service processes on one project (see the module docstring)."""

    def __init__(self, backend: BigQueryBackend, project: str, servers: list[ServerProcess], calls: CallLog) -> None:
        self.backend = backend
        self.project = project
        self.servers = servers
        self.calls = calls
        self.apis = [RecordedApi(s, calls, i) for i, s in enumerate(servers)]
        self._proxy_before: dict[str, Any] = {}

    @classmethod
    def start(cls, backend: BigQueryBackend, tmp: Path, count: int, seed: Seed | None, **env: str) -> Cluster:
        project = backend.new_project(seed)
        # Cloud Scheduler's part is the test's: no instance triggers or works the queue by itself.
        # The client's own retry deadline is production's (60 s), not the 5 s the single-server tests
        # use to keep injected faults quick: several instances on one emulator can keep it busy
        # past 5 s (a slow answer is not a BigQuery limit; the limits are the proxy's).
        defaults = {"SCHEDULER_LOOP_ENABLED": "false", "BIGQUERY_RETRY_DEADLINE_SECONDS": "60"}
        servers = backend.servers_on(project, tmp, count, **{**defaults, **env})
        cluster = cls(backend, project, servers, CallLog())
        try:
            response = cluster.apis[0].bootstrap()  # once, on one instance: the others share the dataset
            assert response.status_code == 200, response.text
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def proxy(self) -> Any:
        assert self.backend.proxy is not None, "the BigQuery backend runs behind the limits proxy"
        return self.backend.proxy

    def configure_proxy(self, **settings: Any) -> dict[str, Any]:
        """Change the shared proxy's settings; ``stop()`` restores the values they had before."""
        current = self.proxy.configure()
        for name in settings:
            self._proxy_before.setdefault(name, current[name])
        result: dict[str, Any] = self.proxy.configure(**settings)
        return result

    def restore_proxy(self) -> None:
        if self._proxy_before:
            self.proxy.configure(**self._proxy_before)
            self._proxy_before = {}

    def stats(self, **filters: str) -> dict[str, Any]:
        """The proxy's statistics for this cluster's project (its statements and its tables' slots)."""
        stats: dict[str, Any] = self.proxy.stats(project=self.project, **filters)
        prefix = f"{self.project}."
        stats["tables"] = {t: v for t, v in stats["tables"].items() if t.startswith(prefix)}
        return stats

    def stop(self) -> None:
        try:
            self.restore_proxy()
        finally:
            for api in self.apis:
                api.http.close()
            for server in self.servers:
                server.stop()

    def logs(self, tail: int = 4000) -> str:
        """The end of each instance's log (for failure messages)."""
        return "\n".join(f"--- instance {i} ({s.base_url}):\n{s.log()[-tail:]}" for i, s in enumerate(self.servers))


def at_once(calls: Sequence[Callable[[], T]], timeout: float = 600.0) -> list[T | BaseException]:
    """Run each call in its own thread, released together by a barrier; each one's result or exception."""
    barrier = threading.Barrier(len(calls))
    results: list[T | BaseException] = [RuntimeError("did not finish")] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # returned to the caller, which asserts on it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), f"calls still running after {timeout}s"
    return results


def on_every_instance(cluster: Cluster, call: Callable[[Api], T], timeout: float = 600.0) -> list[T | BaseException]:
    """``call(api)`` on every instance of the cluster at the same moment (``at_once``)."""
    return at_once([partial(call, api) for api in cluster.apis], timeout=timeout)


def values(results: Sequence[T | BaseException]) -> list[T]:
    """The results of ``at_once``, raising the first exception among them."""
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if not isinstance(r, BaseException)]


def limit_errors(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """The statements the proxy refused (full DML queue) or failed by injection, as BigQuery would."""
    return [s for s in stats["statements"] if s["outcome"] in LIMIT_OUTCOMES]


def describe(statements: Sequence[dict[str, Any]], limit: int = 10) -> str:
    """A short listing of proxy statements for a failure message."""
    lines = [
        f"{s['kind']} {s['table']} outcome={s['outcome']} reason={s['error_reason']} org={s['org']} run={s['run_id']}"
        for s in statements[:limit]
    ]
    more = f"\n… and {len(statements) - limit} more" if len(statements) > limit else ""
    return "\n".join(lines) + more


# --- schedules -------------------------------------------------------------------------------------
def just_passed_daily_cron(minutes_ago: int = 2) -> tuple[str, datetime]:
    """A daily cron (UTC) whose latest due time is ``minutes_ago`` minutes back, and that time. A
    schedule with it and ``starts_at`` a day back is due at once: the trigger enqueues that minute."""
    t = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).replace(second=0, microsecond=0)
    return f"{t.minute} {t.hour} * * *", t


def create_schedule(api: Api, slug: str, key: str, cron: str, **body: Any) -> dict[str, Any]:
    payload = {
        "pipeline": "gcp/cost/cost_billing",
        "cron_expression": cron,
        "timezone": "UTC",
        "starts_at": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
        "parameters": {"window": "yesterday"},
        **body,
    }
    response = api.http.post(f"/api/v1/organizations/{slug}/schedules", headers={"X-API-Key": key}, json=payload)
    assert response.status_code == 201, response.text
    return dict(response.json())


def schedule_items(api: Api, slug: str, key: str, schedule_id: str) -> list[dict[str, Any]]:
    response = api.http.get(f"/api/v1/organizations/{slug}/schedules/{schedule_id}/runs", headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def runs_of(api: Api, slug: str) -> list[dict[str, Any]]:
    response = api.http.get("/api/v1/pipelines/runs", headers=api.admin, params={"org_slug": slug, "limit": 500})
    assert response.status_code == 200, response.text
    return list(response.json()["runs"])


def usage(api: Api, slug: str, key: str) -> dict[str, Any]:
    response = api.http.get(f"/api/v1/organizations/{slug}/usage", headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return dict(response.json())


def queue_depth(api: Api) -> dict[str, int]:
    """Queue items by state (the whole queue: a cluster's project holds only its test's items)."""
    response = api.http.get("/api/v1/scheduler/status", headers=api.admin)
    assert response.status_code == 200, response.text
    return {state: int(n) for state, n in response.json()["queue"].items()}


def trigger(api: Api) -> httpx.Response:
    return api.http.post("/api/v1/scheduler/trigger", headers=api.admin)


def process_queue(api: Api, max_items: int) -> httpx.Response:
    return api.http.post("/api/v1/scheduler/process-queue", headers=api.admin, json={"max_items": max_items})


def drain_queue(cluster: Cluster, *, max_items: int, timeout: float) -> list[dict[str, Any]]:
    """process-queue on every instance at once, each in a loop, until no queue item is QUEUED, RUNNING
    or RETRY (or ``timeout``); every answer's body, in order of arrival. A non-200 answer stops that
    instance's loop and is recorded as ``{"status": code, "body": text}``."""
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()
    deadline = time.monotonic() + timeout

    def drain(api: Api) -> None:
        while time.monotonic() < deadline:
            response = process_queue(api, max_items)
            with lock:
                answers.append(
                    response.json()
                    if response.status_code == 200
                    else {"status": response.status_code, "body": response.text}
                )
            if response.status_code != 200:
                return
            if response.json()["processed"] == 0:
                depth = queue_depth(api)
                if not any(depth.get(state, 0) for state in OPEN_QUEUE_STATES):
                    return
                time.sleep(0.5)  # items waiting for their retry time, or running on another instance

    values(on_every_instance(cluster, drain, timeout=timeout + 600))
    return answers


def iter_items(answers: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The per-item outcomes in process-queue answers."""
    for answer in answers:
        yield from answer.get("items", [])


StartCluster = Callable[..., Cluster]  # the ``start_cluster`` fixture (tests/acceptance/conftest.py)
