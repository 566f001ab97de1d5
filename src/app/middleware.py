"""ASGI middleware: request id, body-size limit, and per request one access-log line and one
latency observation by route template (``AccessLog``, ``Metrics``: both built at start-up)."""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.app.logging_setup import AccessLog, org_slug_var, request_id_var
from src.core.metrics import Metrics

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Generated request ids: a random prefix per process and a counter (unique across instances, cheap).
_ID_PREFIX = os.urandom(8).hex()
_ids = itertools.count(1)
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, access_log: AccessLog, metrics: Metrics) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self._access = access_log
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = length = None
        for name, value in scope["headers"]:  # one pass over the request's headers
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
            elif name == b"content-length":
                length = value.decode("latin-1")
        request_id = incoming if incoming and _REQUEST_ID_RE.fullmatch(incoming) else f"{_ID_PREFIX}{next(_ids):08x}"
        request_id_var.set(request_id)
        org_slug_var.set(None)
        started = time.perf_counter()
        status = 500
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            if length in (None, "0") and scope["method"] in _BODYLESS:
                await self.app(scope, receive, send_with_id)
            else:
                body_receive = await self._limited_body(receive, send_with_id, request_id, length)
                if body_receive is not None:
                    await self.app(scope, body_receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route")
            template: str | None = getattr(route, "path", None)
            self._metrics.observe_request(template, scope["method"], status, seconds)
            self._access.write(
                method=scope["method"],
                path=scope["path"],
                status=status,
                seconds=seconds,
                remote_ip=(scope.get("client") or ("", 0))[0],
                request_id=request_id,
                org_slug=org_slug_var.get(),
                route=template,
            )

    async def _limited_body(
        self, receive: Receive, send: Send, request_id: str, declared: str | None
    ) -> Receive | None:
        """Buffer the body up to the limit (bodies here are small JSON); None = refused with 413."""
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
