"""JSON logs with Cloud Logging field names, carrying the request id and org of the request.

Secrets never reach a log line: records are scrubbed of anything shaped like an org API key, and
the admin key's value, before they are formatted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections import deque
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
org_slug_var: ContextVar[str | None] = ContextVar("org_slug", default=None)

_KEY_RE = re.compile(r"[a-z0-9_]{3,50}_api_[A-Za-z0-9]{16}")
_SLACK_HOOK_RE = re.compile(r"hooks\.slack\.com/[^\s\"'<>]+")
# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is scrubbed.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id", "org_slug"}


class ContextAndRedaction(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def _scrub(self, text: str) -> str:
        if "_api_" in text:
            text = _KEY_RE.sub("[REDACTED_API_KEY]", text)
        if "hooks.slack.com/" in text:
            text = _SLACK_HOOK_RE.sub("hooks.slack.com/[REDACTED_WEBHOOK]", text)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[REDACTED]")
        return text

    def _scrub_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._scrub(value)
        if isinstance(value, dict):
            return {k: self._scrub_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub_value(v) for v in value]
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = getattr(record, "request_id", None) or request_id_var.get()
        record.org_slug = getattr(record, "org_slug", None) or org_slug_var.get()
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        record.msg = self._scrub(str(record.msg))
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD:
                record.__dict__[key] = self._scrub_value(value)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self._scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class CloudJsonFormatter(JsonFormatter):
    def add_fields(self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_record, record, message_dict)
        log_record["severity"] = record.levelname
        log_record["time"] = self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z"
        log_record.pop("levelname", None)
        log_record.pop("color_message", None)  # uvicorn's ANSI-coloured copy of the message
        if record.exc_text:
            log_record["stack_trace"] = record.exc_text
        for key in ("request_id", "org_slug"):
            if log_record.get(key) is None:
                log_record.pop(key, None)


def configure_logging(level: str, *, secrets: list[str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = CloudJsonFormatter("%(levelname)s %(name)s %(message)s", json_ensure_ascii=False)
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(ContextAndRedaction(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The audit trail (src/app/audit.py): stdout, whatever LOG_LEVEL, so it is a log of its own.
    audit_handler = logging.StreamHandler(sys.stdout)
    audit_handler.setFormatter(formatter)
    audit_handler.addFilter(ContextAndRedaction(secrets))
    audit = logging.getLogger("convergence.audit")
    audit.handlers[:] = [audit_handler]
    audit.setLevel(logging.INFO)
    audit.propagate = False
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # The request middleware writes the access log (AccessLog). A uvicorn.access logger without
    # handlers of its own and no propagation makes uvicorn skip its access-log work entirely.
    access = logging.getLogger("uvicorn.access")
    access.propagate = False
    access.disabled = True
    for name in ("httpx", "httpcore"):  # their INFO lines carry request URLs (webhook URLs are secrets)
        logging.getLogger(name).setLevel(logging.WARNING)
    # boto's DEBUG lines carry signed requests and credential lookups: never below WARNING.
    for name in ("boto3", "botocore", "s3transfer", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


class AccessLog:
    """One JSON line per request (``convergence.access``), in the format of the other log lines.

    Everything that does not change per request is decided once, here: whether INFO is on, the
    secrets to scrub, the line's fixed fields. Per request, ``write`` formats one line (only values
    the client chose go through the JSON encoder) and appends it to a queue — no LogRecord, filter,
    formatter, handler lock or system call on the event loop. A writer thread (``start``, from the
    lifespan) drains the queue every ``interval`` seconds in one write, so a slow log sink (a full
    pipe, disk write-back) never stalls requests. If the sink stays blocked the queue is bounded:
    lines beyond ``max_pending`` are dropped and counted in a later line.
    """

    def __init__(
        self,
        *,
        level: str,
        secrets: list[str],
        fd: int | None = None,
        interval: float = 0.05,
        max_pending: int = 100_000,
    ) -> None:
        self.enabled = logging.getLevelName(level) <= logging.INFO
        self._fd = sys.stderr.fileno() if fd is None else fd
        self._secrets = [s for s in secrets if s]
        self._interval = interval
        self._max_pending = max_pending
        self._second = -1
        self._stamp = ""
        self._pending: deque[str] = deque()
        self._dropped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- writer thread ----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None and self.enabled:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=5)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def flush(self) -> None:
        lines: list[str] = []
        pending = self._pending
        while pending:
            lines.append(pending.popleft())
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            lines.append(self._line_dropped(dropped))
        data = "".join(lines).encode()
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError:
            pass  # a full or closed stderr must never fail the service

    # --- per request ------------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        if "_api_" in text:
            text = _KEY_RE.sub("[REDACTED_API_KEY]", text)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[REDACTED]")
        return text

    def _time(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((now - second) * 1000):03d}Z"

    def _line_dropped(self, count: int) -> str:
        return (
            f'{{"name": "convergence.access", "message": "access log lines dropped (log sink blocked)", '
            f'"dropped": {count}, "severity": "WARNING", "time": "{self._time()}"}}\n'
        )

    def write(
        self,
        *,
        method: str,
        path: str,
        status: int,
        seconds: float,
        remote_ip: str,
        request_id: str,
        org_slug: str | None,
        route: str | None,
    ) -> None:
        if not self.enabled:
            return
        org = f', "org_slug": "{org_slug}"' if org_slug else ""
        line = (
            f'{{"name": "convergence.access", "message": "request", "httpRequest": {{"requestMethod": '
            f'{json.dumps(method)}, "requestUrl": {json.dumps(self._scrub(path))}, "status": {status}, '
            f'"latency": "{seconds:.6f}s", "remoteIp": {json.dumps(remote_ip)}}}, "route": "{route or ""}", '
            f'"request_id": "{request_id}"{org}, "severity": "INFO", "time": "{self._time()}"}}\n'
        )
        if self._thread is None:  # not started (no lifespan): write at once
            self._pending.append(line)
            self.flush()
        elif len(self._pending) < self._max_pending:
            self._pending.append(line)
        else:
            self._dropped += 1
