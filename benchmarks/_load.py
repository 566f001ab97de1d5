"""Closed-loop HTTP load generator (a separate process from the server under test).

``python -m benchmarks._load --url http://127.0.0.1:PORT/path [--header K:V] --connections 16
--warmup 1 --duration 5`` prints one JSON line: requests, requests/s, latency percentiles, status
counts and the client's own CPU use (to show whether the client, not the server, was the limit).

Two clients:

* ``raw`` (default): asyncio streams, HTTP/1.1 keep-alive, one prepared request per connection,
  responses framed by ``Content-Length``. Cheap per request, so that it is not the bottleneck.
* ``httpx``: ``httpx.AsyncClient`` with N keep-alive connections; ~5x more client CPU per request.
* ``wrk``: the C load generator (Debian's ``wrk``), one thread, N keep-alive connections; the
  cheapest client of the three, so the default where it is installed.

Bounded in time (warm-up + duration) and count (``--max-requests``); loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from benchmarks._common import percentile


@dataclass
class Tally:
    measuring: bool = False
    stop: bool = False
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    max_requests: int = 10_000_000
    total: int = 0
    full: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, status: int, seconds: float) -> None:
        self.total += 1
        if self.measuring:
            self.latencies.append(seconds)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if len(self.latencies) >= self.max_requests:
                self.full.set()


async def _raw_exchange(host: str, port: int, request: bytes, tally: Tally) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while not tally.stop:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = -1
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                    break
            if length < 0:
                raise RuntimeError("response without Content-Length")
            await reader.readexactly(length)
            tally.record(status, time.perf_counter() - started)
    finally:
        writer.close()


async def _raw_worker(host: str, port: int, request: bytes, tally: Tally) -> None:
    """One keep-alive connection; a dropped connection is counted and reopened."""
    while not tally.stop:
        try:
            await _raw_exchange(host, port, request, tally)
        except (ConnectionError, asyncio.IncompleteReadError):
            tally.errors += 1
            await asyncio.sleep(0.01)


async def _httpx_worker(client: object, url: str, headers: dict[str, str], tally: Tally) -> None:
    import httpx

    assert isinstance(client, httpx.AsyncClient)
    while not tally.stop:
        started = time.perf_counter()
        try:
            response = await client.get(url, headers=headers)
        except httpx.TransportError:
            tally.errors += 1
            continue
        tally.record(response.status_code, time.perf_counter() - started)


async def _drive(args: argparse.Namespace) -> dict[str, object]:
    parts = urlsplit(args.url)
    if parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
        raise SystemExit("loopback URLs only")
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    tally = Tally(max_requests=args.max_requests)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if args.client == "raw":
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: */*"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        tasks = [asyncio.create_task(_raw_worker(host, port, request, tally)) for _ in range(args.connections)]
        closer = None
    else:
        import httpx

        client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections),
            timeout=30.0,
        )
        tasks = [asyncio.create_task(_httpx_worker(client, args.url, headers, tally)) for _ in range(args.connections)]
        closer = client
    await asyncio.sleep(args.warmup)
    tally.measuring = True
    cpu0, t0 = os.times(), time.perf_counter()
    full = asyncio.create_task(tally.full.wait())
    await asyncio.wait([full, *tasks], timeout=args.duration, return_when=asyncio.FIRST_COMPLETED)
    full.cancel()
    tally.measuring = False
    tally.stop = True
    elapsed = time.perf_counter() - t0
    cpu1 = os.times()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    if closer is not None:
        await closer.aclose()
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    lat = tally.latencies
    if not lat:
        raise SystemExit(f"no request completed: {failures[:3]}")
    client_cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {
        "client": args.client,
        "connections": args.connections,
        "seconds": round(elapsed, 3),
        "requests": len(lat),
        "total_requests": tally.total,
        "rps": len(lat) / elapsed,
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "max_ms": max(lat) * 1000,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "client_cpu_share": client_cpu / elapsed,
        "connection_errors": tally.errors,
        "worker_errors": failures[:3],
    }


def _wrk(args: argparse.Namespace) -> dict[str, object]:
    """The same figures from wrk (warm-up run first, then the measured run)."""
    import re
    import resource
    import subprocess

    argv = ["wrk", "-t1", f"-c{args.connections}", "--latency", args.url]
    for header in args.header:
        argv += ["-H", header]
    if args.warmup > 0:
        subprocess.run([*argv[:3], f"-d{max(1, round(args.warmup))}s", *argv[3:]], capture_output=True, check=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [*argv[:3], f"-d{max(1, round(args.duration))}s", *argv[3:]], capture_output=True, text=True, check=True
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)

    def ms(label: str) -> float:
        found = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)\b", out)
        if found is None:
            raise SystemExit(f"unexpected wrk output:\n{out}")
        return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]

    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    seconds = float(re.search(r"requests in ([\d.]+)(m?s)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    bad = int(non2xx.group(1)) if non2xx else 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    statuses = {k: v for k, v in {"2xx": total - bad, "non-2xx": bad}.items() if v}
    return {
        "client": "wrk",
        "connections": args.connections,
        "seconds": seconds,
        "requests": total,
        "total_requests": total,
        "rps": total / seconds,
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "max_ms": None,
        "statuses": statuses,
        "client_cpu_share": cpu / seconds,
        "connection_errors": sum(int(g) for g in errors.groups()) if errors else 0,
        "worker_errors": [],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--header", action="append", default=[], help="'Name: value' (repeatable)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--max-requests", type=int, default=2_000_000)
    parser.add_argument("--client", choices=["raw", "httpx", "wrk"], default="raw")
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    print(json.dumps(_wrk(args) if args.client == "wrk" else asyncio.run(_drive(args))))


if __name__ == "__main__":
    main()
