"""ASGI middleware: request id, body-size limit, one JSON access-log line per request."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.app.logging_setup import org_slug_var, request_id_var

log = logging.getLogger("convergence.access")
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID_RE.fullmatch(incoming) else uuid.uuid4().hex
        request_id_var.set(request_id)
        org_slug_var.set(None)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            body_receive = await self._limited_body(scope, receive, send_with_id, request_id)
            if body_receive is not None:
                await self.app(scope, body_receive, send_with_id)
        finally:
            log.info(
                "request",
                extra={
                    "httpRequest": {
                        "requestMethod": scope["method"],
                        "requestUrl": scope["path"],
                        "status": status["code"],
                        "latency": f"{time.perf_counter() - started:.6f}s",
                        "remoteIp": (scope.get("client") or ("", 0))[0],
                    }
                },
            )

    async def _limited_body(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> Receive | None:
        """Buffer the body up to the limit (bodies here are small JSON); None = refused with 413."""
        if scope["method"] in {"GET", "HEAD", "OPTIONS", "DELETE"} and _header(scope, b"content-length") in {None, "0"}:
            return receive
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await self._reject(send, request_id)
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return receive
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await self._reject(send, request_id)
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    async def _reject(self, send: Send, request_id: str) -> None:
        payload: dict[str, Any] = {
            "error": "payload_too_large",
            "message": f"request body is larger than {self.max_body} bytes",
            "request_id": request_id,
        }
        data = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": data})
