"""Start and stop a local BigQuery emulator (bqemulator, PyPI) for the BigQuery-backend tests.

It runs from its own virtualenv (``.venv-bq``, see ``requirements-bqemulator.txt``) on free loopback
ports, in memory, offline. DuckDB's ``spatial`` extension, which the emulator needs at start-up, is
registered from the ``duckdb-extension-spatial`` wheel instead of being downloaded.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from tests.server import REPO, free_port

VENV = REPO / ".venv-bq"

_REGISTER_SPATIAL = """
import duckdb
con = duckdb.connect()
con.execute("SET autoinstall_known_extensions = false")
try:
    con.execute("LOAD spatial")
except Exception:
    from duckdb_extensions import import_extension
    import_extension("spatial", con=con)
    con.execute("LOAD spatial")
"""


class EmulatorUnavailable(RuntimeError):
    pass


class BigQueryEmulator:
    def __init__(self, log_dir: Path, venv: Path = VENV) -> None:
        self.venv = venv
        self.rest_port = free_port()
        self.grpc_port = free_port()
        self.log_path = log_dir / "bqemulator.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def start(self, timeout: float = 90.0) -> None:
        binary = self.venv / "bin" / "bqemulator"
        if not binary.exists():
            raise EmulatorUnavailable(
                f"{binary} not found: create it with `python3 -m venv .venv-bq && "
                ".venv-bq/bin/pip install -r requirements-bqemulator.txt` (simple_test.sh does)"
            )
        subprocess.run([str(self.venv / "bin" / "python"), "-c", _REGISTER_SPATIAL], check=True, capture_output=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                str(binary), "start",
                "--rest-host", "127.0.0.1", "--rest-port", str(self.rest_port),
                "--grpc-host", "127.0.0.1", "--grpc-port", str(self.grpc_port),
                "--project", "convergence-test", "--log-level", "warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EmulatorUnavailable(f"bqemulator exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{self.endpoint}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise EmulatorUnavailable(f"bqemulator not ready after {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
