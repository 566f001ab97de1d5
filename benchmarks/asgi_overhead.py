"""Benchmark A (diagnostic): CPU time per request of the app itself, without HTTP.

``cd /work/main && .venv/bin/python -m benchmarks.asgi_overhead [--requests 20000] [--profile auth]``

Calls the ASGI apps in one process, in a loop, with a fixed request (the service on a fresh DuckDB
file, bootstrapped, one onboarded org, its lifespan started): the bare FastAPI endpoint of
``benchmarks/bare_app.py``, the service's ``/health`` and the authenticated
``GET /api/v1/organizations/{org}``. Prints µs of CPU per request (3 interleaved rounds, best) and
the difference to the bare app: the steadier view of what ``startup_and_auth`` measures over HTTP.
``--profile NAME`` prints a cProfile table of that endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from typing import Any

ADMIN_KEY = "bench-admin-key-0123456789abcdef0123456789"
Headers = list[tuple[bytes, bytes]]


async def call(app: Any, path: str, headers: Headers, method: str = "GET", body: bytes = b"") -> dict[str, Any]:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"bench"), *headers], "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    out: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return out


async def per_request_us(app: Any, path: str, headers: Headers, n: int) -> float:
    for _ in range(200):
        await call(app, path, headers)
    started = time.process_time()
    for _ in range(n):
        await call(app, path, headers)
    return (time.process_time() - started) / n * 1e6


async def main_async(args: argparse.Namespace) -> None:
    from benchmarks.bare_app import app as bare
    from src.app.main import create_app

    app = create_app()
    async with app.router.lifespan_context(app):
        admin: Headers = [(b"x-admin-key", ADMIN_KEY.encode()), (b"content-type", b"application/json")]
        assert (await call(app, "/api/v1/admin/bootstrap", admin, "POST", b"{}"))["status"] == 200
        onboard = {"org_slug": "bench_org", "company_name": "Bench", "admin_email": "ops@bench.example"}
        answer = await call(app, "/api/v1/organizations/onboard", admin, "POST", json.dumps(onboard).encode())
        assert answer["status"] == 201, answer
        auth: Headers = [(b"x-api-key", json.loads(answer["body"])["api_key"].encode())]
        targets = {
            "bare": (bare, "/bare", []),
            "health": (app, "/health", []),
            "auth": (app, "/api/v1/organizations/bench_org", auth),
        }
        results: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(3):
            for name, (target, path, headers) in targets.items():
                results[name].append(await per_request_us(target, path, headers, args.requests))
        bare_us = min(results["bare"])
        print(f"CPU per request, {args.requests} requests x 3 rounds (best round; then all rounds):")
        for name, values in results.items():
            best = min(values)
            rounds = " / ".join(f"{v:.1f}" for v in values)
            print(f"  {name:<7} {best:6.1f} us  (+{best - bare_us:5.1f} over bare)   [{rounds}]")
        if args.profile:
            target, path, headers = targets[args.profile]
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.requests):
                await call(target, path, headers)
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description="CPU time per request of the ASGI apps, without HTTP.")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--profile", choices=["bare", "health", "auth"], default=None)
    args = parser.parse_args()
    data = tempfile.mkdtemp(prefix="bench-asgi-")
    os.environ.update(
        ENVIRONMENT="development",
        ADMIN_API_KEY=ADMIN_KEY,
        DUCKDB_PATH=f"{data}/warehouse.duckdb",
        LOCAL_KMS_KEY_PATH=f"{data}/local_kms.key",
        SCHEDULER_LOOP_ENABLED="false",
    )
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # the service's log lines
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
