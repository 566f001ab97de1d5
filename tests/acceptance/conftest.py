"""Fixtures of the acceptance tests that run several service processes on one warehouse."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import BigQueryBackend, Seed
from tests.conftest import selected_backends
from tests.instances import Cluster, StartCluster


@pytest.fixture
def start_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StartCluster]:
    """``start_cluster(count=3, seed=None, **env)``: ``count`` service processes on a fresh project of
    the session's emulator, behind the session's limits proxy, bootstrapped once (tests/instances.py).
    Everything it started is stopped, and the proxy settings it changed are put back, at teardown."""
    if "bigquery" not in selected_backends():
        pytest.skip("several processes share one warehouse only on BigQuery (BACKENDS excludes it)")
    backend: BigQueryBackend = request.getfixturevalue("bigquery_backend")
    started: list[Cluster] = []

    def start(count: int = 3, seed: Seed | None = None, **env: str) -> Cluster:
        cluster = Cluster.start(backend, tmp_path / f"cluster-{len(started) + 1}", count, seed, **env)
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.stop()
