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

from src.app.client_address import CLIENT_SCOPE_KEY, client_address
from src.app.logging_setup import AccessLog, org_slug_var, request_id_var
from src.core.metrics import Metrics

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Generated request ids: a random prefix per process and a counter (unique across instances, cheap).
_ID_PREFIX = os.urandom(8).hex()
_ids = itertools.count(1)
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
MAX_JSON_DEPTH = 32  # no body of this API nests deeper; a parser would recurse on deeper ones
# Brackets outside strings (a string token is skipped whole, escapes included).
_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON text nests arrays/objects deeper than ``limit`` (checked before any parser
    sees it: 200,000 ``[`` must be a 400, not a recursion error). Cheap for ordinary bodies: only
    a body with more than ``limit`` opening brackets is scanned."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    for match in _JSON_TOKENS.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


class RequestContextMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, access_log: AccessLog, metrics: Metrics, trusted_proxy_hops: int = 0
    ) -> None:
        self.app = app
        self._hops = trusted_proxy_hops
        self.max_body = max_body_bytes
        self._access = access_log
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = length = None
        forwarded: list[bytes] = []
        for name, value in scope["headers"]:  # one pass over the request's headers
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
            elif name == b"content-length":
                length = value.decode("latin-1")
            elif name == b"x-forwarded-for":
                forwarded.append(value)
        peer = (scope.get("client") or ("", 0))[0]
        client = scope[CLIENT_SCOPE_KEY] = client_address(peer, forwarded, self._hops) if self._hops else peer
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
            template: str | None = getattr(route, "path_format", None)  # converters stripped
            self._metrics.observe_request(template, scope["method"], status, seconds)
            self._access.write(
                method=scope["method"],
                path=scope["path"],
                status=status,
                seconds=seconds,
                remote_ip=client,
                request_id=request_id,
                org_slug=org_slug_var.get(),
                route=template,
            )

    async def _limited_body(
        self, receive: Receive, send: Send, request_id: str, declared: str | None
    ) -> Receive | None:
        """Buffer the body up to the limit (bodies here are small JSON); None = refused with 413."""
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await self._reject(send, request_id, *self._too_large())
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
                await self._reject(send, request_id, *self._too_large())
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if too_deep(body):
            await self._reject(
                send, request_id, 400, "json_too_deep", f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels"
            )
            return None
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    def _too_large(self) -> tuple[int, str, str]:
        return 413, "payload_too_large", f"request body is larger than {self.max_body} bytes"

    async def _reject(self, send: Send, request_id: str, status: int, code: str, message: str) -> None:
        payload: dict[str, Any] = {"error": code, "message": message, "request_id": request_id}
        data = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": data})
