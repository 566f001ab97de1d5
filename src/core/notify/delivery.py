"""Bounded retries with exponential backoff for one notification, and its outcome."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal


class DeliveryError(Exception):
    """One failed attempt. ``message`` is safe to store and log (never a secret or a webhook URL)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Delivery:
    channel: Literal["email", "slack"]
    status: Literal["SENT", "FAILED", "SKIPPED"]
    attempts: int = 0
    error: str | None = None  # FAILED: the last attempt's error; SKIPPED: the reason
    detail: dict[str, Any] = field(default_factory=dict)
    retryable: bool = False  # FAILED: whether the step's own ``retries`` may help

    def step_result(self) -> dict[str, Any]:
        """What a notification step returns to the executor (and what its step log shows)."""
        if self.status == "SKIPPED":
            return {"status": "SKIPPED", "reason": self.error, "channel": self.channel, **self.detail}
        base = {"channel": self.channel, "attempts": self.attempts, **self.detail}
        if self.status == "FAILED":
            return {"status": "FAILED", "error": self.error, "retryable": self.retryable, **base}
        return {"status": "COMPLETED", **base}


async def deliver(
    channel: Literal["email", "slack"],
    attempt: Callable[[], Awaitable[None]],
    *,
    max_attempts: int,
    backoff_seconds: float,
    detail: dict[str, Any] | None = None,
) -> Delivery:
    """Run ``attempt`` until it succeeds, a failure is not retryable, or ``max_attempts`` are spent
    (waiting ``backoff_seconds``, then twice as long, ... between attempts)."""
    extra = detail or {}
    for number in range(1, max_attempts + 1):
        try:
            await attempt()
        except DeliveryError as exc:
            if not exc.retryable or number == max_attempts:
                message = f"{channel} not delivered after {number} attempt(s): {exc.message}"
                return Delivery(channel, "FAILED", number, message, extra, retryable=exc.retryable)
            await asyncio.sleep(backoff_seconds * 2 ** (number - 1))
        else:
            return Delivery(channel, "SENT", number, None, extra)
    raise ValueError("max_attempts must be at least 1")


def log_delivery(logger: logging.Logger, delivery: Delivery, *, org_slug: str | None, run_id: str, via: str) -> None:
    """One log line per notification (recipients' addresses and webhook URLs are not logged)."""
    extra = {
        "org_slug": org_slug,
        "pipeline_logging_id": run_id,
        "channel": delivery.channel,
        "via": via,
        "outcome": delivery.status,
        "attempts": delivery.attempts,
        "error": delivery.error,
    }
    level = logging.WARNING if delivery.status == "FAILED" else logging.INFO
    logger.log(level, f"notification {delivery.status.lower()}", extra=extra)
