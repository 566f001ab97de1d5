"""A small local fake of Cloud KMS's REST API, for the real google-cloud-kms client (REST transport).

No KMS emulator exists (``../shared/peers.md`` §3), so the tests run the official client against
this: ``POST /v1/{cryptoKey}:encrypt`` and ``:decrypt`` with Google's JSON shapes (bytes as
base64, CRC32C checksums as int64 strings), AES-256-GCM per crypto-key name, additional
authenticated data enforced, request checksums verified (400 on a mismatch, as KMS does) and the
``verified*`` flags answered. Unknown keys get 404. Tests can make the next N calls fail with an
HTTP status, or corrupt the next responses, and read every call the fake received.

    with KmsFake() as fake:
        fake.add_key(KEY)
        kms = CloudKms(KEY, api_endpoint=fake.endpoint)
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import google_crc32c
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_PATH = re.compile(r"^/v1/(?P<name>projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/:]+)"
                   r"(?:/cryptoKeyVersions/(?P<version>[^/:]+))?:(?P<method>encrypt|decrypt)$")  # fmt: skip
_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 500: "INTERNAL", 503: "UNAVAILABLE"}

Corruption = Literal["checksum", "unverified", "name", "no_checksum"]


def crc32c(data: bytes) -> int:
    return int(google_crc32c.value(data))


KMS_KEY = "projects/convergence-test/locations/global/keyRings/convergence/cryptoKeys/stored-secrets"


@dataclass(frozen=True)
class KmsCall:
    method: str  # "encrypt" | "decrypt"
    key_name: str
    aad: bytes
    status: int  # HTTP status the fake answered


class _KmsError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class KmsFake:
    """Thread-safe; serves on 127.0.0.1 on a free port from a daemon thread."""

    def __init__(self) -> None:
        self._keys: dict[str, AESGCM] = {}
        self._lock = threading.Lock()
        self._fail: list[int] = []
        self._corrupt: list[Corruption] = []
        self.calls: list[KmsCall] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- control --------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add_key(self, key_name: str) -> str:
        with self._lock:
            self._keys[key_name] = AESGCM(AESGCM.generate_key(bit_length=256))
        return key_name

    def fail_next(self, count: int, status: int = 503) -> None:
        """The next ``count`` calls answer ``status`` (before touching any key)."""
        with self._lock:
            self._fail.extend([status] * count)

    def fail_always(self, status: int = 503) -> None:
        self.fail_next(10_000, status)

    def corrupt_next(self, how: Corruption, count: int = 1) -> None:
        """The next successful responses are damaged: a wrong checksum, ``verified*`` flags false,
        another key's name, or no checksum at all."""
        with self._lock:
            self._corrupt.extend([how] * count)

    def reset(self) -> None:
        with self._lock:
            self._fail.clear()
            self._corrupt.clear()
            self.calls.clear()

    def count(self, method: str | None = None) -> int:
        with self._lock:
            return sum(1 for c in self.calls if method is None or c.method == method)

    def start(self) -> KmsFake:
        self._thread = threading.Thread(target=self._server.serve_forever, name="kms-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> KmsFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the API --------------------------------------------------------------------------------
    def _handle(self, method: str, key_name: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self._fail:
                raise _KmsError(self._fail.pop(0), "The service is currently unavailable.")
            aead = self._keys.get(key_name)
            corrupt = self._corrupt.pop(0) if self._corrupt else None
        if aead is None:
            raise _KmsError(404, f"CryptoKey {key_name} not found.")
        aad = _field(body, "additionalAuthenticatedData")
        _verify(body, "additionalAuthenticatedData", aad)
        if method == "encrypt":
            plaintext = _field(body, "plaintext")
            _verify(body, "plaintext", plaintext)
            nonce = os.urandom(12)
            ciphertext = nonce + aead.encrypt(nonce, plaintext, aad)
            answer: dict[str, Any] = {
                "name": f"{key_name}/cryptoKeyVersions/1",
                "ciphertext": base64.b64encode(ciphertext).decode(),
                "ciphertextCrc32c": str(crc32c(ciphertext)),
                "verifiedPlaintextCrc32c": "plaintextCrc32c" in body,
                "verifiedAdditionalAuthenticatedDataCrc32c": "additionalAuthenticatedDataCrc32c" in body,
                "protectionLevel": 1,
            }
            checksum_field = "ciphertextCrc32c"
        else:
            ciphertext = _field(body, "ciphertext")
            _verify(body, "ciphertext", ciphertext)
            try:
                plaintext = aead.decrypt(ciphertext[:12], ciphertext[12:], aad)
            except (InvalidTag, ValueError):
                raise _KmsError(400, "Decryption failed: the ciphertext is invalid.") from None
            answer = {
                "plaintext": base64.b64encode(plaintext).decode(),
                "plaintextCrc32c": str(crc32c(plaintext)),
                "usedPrimary": True,
                "protectionLevel": 1,
            }
            checksum_field = "plaintextCrc32c"
        if corrupt == "checksum":
            answer[checksum_field] = str((int(answer[checksum_field]) + 1) % 2**32)
        elif corrupt == "no_checksum":
            answer.pop(checksum_field)
        elif corrupt == "unverified":
            answer["verifiedPlaintextCrc32c"] = False
            answer["verifiedAdditionalAuthenticatedDataCrc32c"] = False
        elif corrupt == "name" and "name" in answer:
            answer["name"] = f"{key_name}2/cryptoKeyVersions/1"
        return answer

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                match = _PATH.match(unquote(urlsplit(self.path).path))
                if match is None:
                    self._send(404, _error(404, f"no route {self.path}"))
                    return
                method, key_name = match["method"], match["name"]
                aad = b""
                try:
                    body = json.loads(raw or b"{}")
                    if not isinstance(body, dict):
                        raise _KmsError(400, "body must be a JSON object")
                    aad = _field(body, "additionalAuthenticatedData")
                    answer, status = fake._handle(method, key_name, body), 200
                except _KmsError as exc:
                    answer, status = _error(exc.code, exc.message), exc.code
                except (ValueError, TypeError) as exc:
                    answer, status = _error(400, f"invalid request: {exc}"), 400
                with fake._lock:
                    fake.calls.append(KmsCall(method, key_name, aad, status))
                self._send(status, answer)

            def do_GET(self) -> None:
                name = unquote(urlsplit(self.path).path).removeprefix("/v1/")
                with fake._lock:
                    known = name in fake._keys
                if known:
                    self._send(200, {"name": name, "purpose": 1, "primary": {"name": f"{name}/cryptoKeyVersions/1"}})
                else:
                    self._send(404, _error(404, f"CryptoKey {name} not found."))

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler


def _field(body: dict[str, Any], name: str) -> bytes:
    value = body.get(name) or ""
    if not isinstance(value, str):
        raise _KmsError(400, f"{name} must be base64 text")
    return base64.b64decode(value, validate=True) if value else b""


def _verify(body: dict[str, Any], name: str, data: bytes) -> None:
    """KMS rejects a request whose ``{name}Crc32c`` does not match the data it came with."""
    sent = body.get(f"{name}Crc32c")
    if sent is not None and int(sent) != crc32c(data):
        snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)
        raise _KmsError(400, f"The checksum in field {snake}_crc32c did not match the data in field {snake}.")


def _error(code: int, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "status": _STATUS.get(code, "UNKNOWN"), "message": message}}
