"""Real notification peers on loopback for acceptance tests: an SMTP server (aiosmtpd, in this
process) that keeps every message, and an HTTP server standing in for Slack incoming webhooks."""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tests.server import free_port

SMTP_USER, SMTP_PASSWORD = "pipeline-mailer", "smtp-pass-0123456789"


@dataclass(frozen=True)
class Mail:
    envelope_to: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        # A long subject is folded right after "Subject:"; unfolded, that leaves a leading space.
        return str(self.message["Subject"]).strip()

    @property
    def body(self) -> str:
        return str(self.message.get_content())


class SmtpSink:
    """Accepts mail for anyone; offers AUTH (only SMTP_USER / SMTP_PASSWORD succeed); can go down and up."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mails: list[Mail] = []
        self.logins: list[str] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        with self._lock:
            self.mails.append(Mail(list(envelope.rcpt_tos), parsed))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = data.login == SMTP_USER.encode() and data.password == SMTP_PASSWORD.encode()
        if ok:
            with self._lock:
                self.logins.append(data.login.decode())
        return AuthResult(success=ok, handled=False)

    def start(self) -> None:
        controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=self._authenticate,
            auth_require_tls=False,
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def env(self) -> dict[str, str]:
        return {
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.port),
            "SMTP_STARTTLS": "false",
            "SMTP_USERNAME": SMTP_USER,
            "SMTP_PASSWORD": SMTP_PASSWORD,
            "SMTP_FROM": "pipelines@convergence.example",
            "SMTP_TIMEOUT_SECONDS": "3",
        }

    def wait_for(self, match: Callable[[Mail], bool], timeout: float = 60.0, count: int = 1) -> list[Mail]:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [m for m in self.mails if match(m)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


class WebhookSink:
    """POST /ok/... answers 200 "ok"; POST /fail/... answers 500 and echoes the path (as many servers
    do) to prove the service never copies what a webhook answers into its logs or step results."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server hook name
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with sink._lock:
                    sink.posts.append((self.path, body))
                status, answer = (200, b"ok") if self.path.startswith("/ok/") else (500, f"Cannot POST {self.path}")
                data = answer if isinstance(answer, bytes) else answer.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self, path: str, containing: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return [body for p, body in self.posts if p == path and containing in str(body.get("text", ""))]

    def wait_for(self, path: str, containing: str = "", timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not self.received(path, containing) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.received(path, containing)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
