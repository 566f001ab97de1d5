"""A local stand-in for Google's OAuth token endpoint, so an org's service-account key can be used
against the BigQuery emulator: google-auth signs a JWT with the key and posts it here
(``SERVICE_ACCOUNT_TOKEN_URI``, development only); the fake answers with a bearer token, or refuses
(``invalid_grant``, as Google does for a deleted or disabled key) for the accounts in ``refused``.
The emulator ignores the token; what is exercised is our code path up to and including the job."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


class OAuthFake:
    def __init__(self) -> None:
        self.refused: set[str] = set()
        self.issued: list[str] = []  # client e-mails that got a token
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread: threading.Thread | None = None

    @property
    def token_uri(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def start(self) -> OAuthFake:
        self._thread = threading.Thread(target=self._server.serve_forever, name="oauth-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        assertion = (form.get("assertion") or [""])[0]
        try:
            payload = assertion.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            email = str(claims["iss"])
        except (IndexError, KeyError, ValueError):
            return 400, {"error": "invalid_request", "error_description": "no assertion"}
        with self._lock:
            if email in self.refused:
                return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            self.issued.append(email)
        return 200, {"access_token": f"fake-token-{len(self.issued)}", "expires_in": 3600, "token_type": "Bearer"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                status, body = fake._answer(form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler
