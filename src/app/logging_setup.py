"""JSON logs with Cloud Logging field names, carrying the request id and org of the request.

Secrets never reach a log line: records are scrubbed of anything shaped like an org API key, and
the admin key's value, before they are formatted.
"""

from __future__ import annotations

import logging
import re
import sys
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
    formatter.converter = __import__("time").gmtime
    handler.setFormatter(formatter)
    handler.addFilter(ContextAndRedaction(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # the request middleware logs requests
    for name in ("httpx", "httpcore"):  # their INFO lines carry request URLs (webhook URLs are secrets)
        logging.getLogger(name).setLevel(logging.WARNING)
