"""Helpers shared by the benchmark scripts: the service as a subprocess, machine facts, statistics.

Not a test module (pytest only collects ``tests/``); nothing here is imported by the service.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
ADMIN_KEY = "bench-admin-key-0123456789abcdef0123456789"


# --- machine and command ----------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def tree_hash() -> str:
    """sha256 over every file under src/ and configs/: shows whether the code changed during a run."""
    digest = hashlib.sha256()
    for path in sorted(p for d in ("src", "configs") for p in (REPO / d).rglob("*") if p.is_file()):
        if "__pycache__" in path.parts:
            continue
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def git_state() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "src", "configs")
    return f"{git('rev-parse', '--short', 'HEAD')}" + (" + uncommitted changes in src/configs" if dirty else "")


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def machine() -> dict[str, str]:
    import duckdb
    import fastapi
    import uvicorn

    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": _cpu_model(),
        "ram": f"{_mem_total_gib():.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": f"fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__}, duckdb {duckdb.__version__}",
    }


def command_line() -> str:
    """The command as it was typed (``python -m benchmarks.x args``), relative to the repo."""
    argv = list(sys.argv)
    script = Path(argv[0]).resolve()
    module = ".".join(script.relative_to(REPO).with_suffix("").parts) if script.is_relative_to(REPO) else argv[0]
    return f"cd {REPO} && .venv/bin/python -m {module} " + " ".join(shlex.quote(a) for a in argv[1:])


def print_header(title: str) -> None:
    print(f"== {title}")
    print(f"command : {command_line()}")
    print(f"date    : {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    for key, value in machine().items():
        print(f"{key:<8}: {value}")
    print(f"git     : {git_state()}; src+configs sha256 {tree_hash()}")
    print(f"loadavg : {load_average()} (1/5/15 min, at start; other processes share this machine)")
    print()


def print_footer() -> None:
    print(f"loadavg : {load_average()} (at end); src+configs sha256 {tree_hash()} (at end)")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print(line(row))
    print()


# --- statistics --------------------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# --- processes -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status_kib(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field (``VmHWM``, ``VmRSS``) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) from ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


class RssSampler:
    """Samples a process's ``VmRSS`` every ``interval`` seconds in a thread of this process (reading
    ``/proc`` costs the sampled process nothing), so a run's peak can be split by step: ``VmHWM``
    only says how high the whole run went."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []  # (epoch seconds, KiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append((time.time(), proc_status_kib(self.pid, "VmRSS")))
            except (OSError, KeyError):
                return

    def peak_kib(self, start: str | None, end: str | None) -> int | None:
        """The highest sample between two ISO instants (a step's ``started_at`` / ``completed_at``)."""
        if start is None or end is None:
            return None
        t0, t1 = datetime.fromisoformat(start).timestamp(), datetime.fromisoformat(end).timestamp()
        inside = [kib for t, kib in self.samples if t0 <= t <= t1]
        return max(inside) if inside else None

    def peaks_by_step(self, steps: Sequence[Mapping[str, Any]]) -> dict[str, int | None]:
        """Each step of a run's step log -> the peak RSS sampled while it ran (KiB)."""
        return {str(s["step_id"]): self.peak_kib(s.get("started_at"), s.get("completed_at")) for s in steps}


def step_peak_table(rows: Sequence[tuple[str, Sequence[Mapping[str, Any]], int]]) -> None:
    """Print the service's peak RSS by step (``step_peak_kib`` of each pipeline attempt, max over
    attempts) against the raw load's peak; one line per ``(label, attempts, raw peak KiB)``."""
    steps = list(dict.fromkeys(k for _, attempts, _ in rows for x in attempts for k in x["step_peak_kib"]))
    lines: list[list[str]] = []
    for label, attempts, raw_peak in rows:
        line = [label]
        for step in steps:
            known = [p for x in attempts if (p := x["step_peak_kib"].get(step)) is not None]
            line.append(f"{mib(max(known))} ({max(known) / raw_peak:.2f}x raw)" if known else "-")
        lines.append([*line, mib(raw_peak)])
    print("Peak RSS by step: the service's VmRSS sampled every 20 ms while each step ran (max over attempts;")
    print("'-': the step did not run).")
    print_table(["rows", *steps, "raw peak"], lines)


class Server:
    """A uvicorn process (the service, or the bare reference app) on a free loopback port."""

    def __init__(self, argv: Sequence[str], *, data_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.argv = list(argv)
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("GCP_", "WAREHOUSE", "KMS_", "BIGQUERY_"))},
            "ENVIRONMENT": "development",
            "ADMIN_API_KEY": ADMIN_KEY,
            "DUCKDB_PATH": str(data_dir / "warehouse.duckdb"),
            "LOCAL_KMS_KEY_PATH": str(data_dir / "local_kms.key"),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            **(env or {}),
        }
        self.log_path = data_dir / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def service(cls, data_dir: Path, env: Mapping[str, str] | None = None) -> Server:
        return cls([sys.executable, "-m", "src.app"], data_dir=data_dir, env=env)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0, poll: float = 0.005) -> float:
        """Start and wait for the first 200 from ``/health``; returns the seconds that took."""
        log = self.log_path.open("ab")
        started = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = started + timeout
        with httpx.Client(timeout=1.0) as client:
            while time.perf_counter() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
                try:
                    if client.get(f"{self.base_url}/health").status_code == 200:
                        return time.perf_counter() - started
                except httpx.TransportError:
                    pass
                time.sleep(poll)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout)


def admin_headers() -> dict[str, str]:
    return {"X-Admin-Key": ADMIN_KEY}


def bootstrap(http: httpx.Client) -> None:
    response = http.post("/api/v1/admin/bootstrap", headers=admin_headers(), json={})
    if response.status_code != 200:
        raise RuntimeError(f"bootstrap: {response.status_code} {response.text}")


def onboard_body(org_slug: str) -> dict[str, str]:
    return {
        "org_slug": org_slug,
        "company_name": f"{org_slug} Inc",
        "admin_email": f"ops@{org_slug.replace('_', '-')}.example",
        "subscription_plan": "SCALE",
    }


def onboard(http: httpx.Client, org_slug: str) -> str:
    response = http.post("/api/v1/organizations/onboard", headers=admin_headers(), json=onboard_body(org_slug))
    if response.status_code != 201:
        raise RuntimeError(f"onboard {org_slug}: {response.status_code} {response.text}")
    return str(response.json()["api_key"])


def run_json(argv: Sequence[str], *, timeout: float) -> dict[str, Any]:
    """Run a worker subprocess that prints one JSON object on its last stdout line."""
    import json

    done = subprocess.run(list(argv), cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
