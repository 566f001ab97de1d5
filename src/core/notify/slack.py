"""Slack notifications: one JSON POST to an incoming-webhook URL (httpx).

Before each attempt the URL's host is resolved and every address checked
(``webhook_url.resolve_checked``); the request then connects to a checked address
(``webhook_post.PinnedTransport``), follows no redirects and ignores proxy settings from the
environment. Errors name the HTTP status or the kind of failure, never the URL. httpx is imported
with the first delivery, not at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from src.core.notify.delivery import Delivery, deliver
from src.core.notify.templates import render
from src.core.notify.webhook_url import UnsafeWebhookError, parse_webhook_url
from src.core.settings import Settings

DEFAULT_TEXT = (
    "*{status}*: `{pipeline_id}` for `{org_slug}` ({window})\n"
    "Failed step: {failed_step} | Error: {error}\n"
    "Rows written: {rows_processed} | Duration: {duration}\n"
    "Run: {run_url}"
)
_MENTION = re.compile(r"^(here|channel|everyone|[UW][A-Z0-9]{2,20}|S[A-Z0-9]{2,20})$")


class SlackConfig(BaseModel):
    """A Slack notification: where, what, how it looks, and the retry policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    webhook_url: str | None = Field(
        None,
        max_length=2048,
        description="Default (and preferred): the organization's webhook, stored encrypted "
        "(PUT /api/v1/organizations/{org}/notifications). A URL here is a secret in a file.",
    )
    text: str = Field(DEFAULT_TEXT, min_length=1, max_length=4000)
    channel: str | None = Field(None, pattern=r"^[#@]?[A-Za-z0-9._\-]{1,80}$")
    username: str | None = Field(None, min_length=1, max_length=80)
    icon_emoji: str | None = Field(None, pattern=r"^:[a-z0-9_+\-]{1,64}:$")
    mentions: tuple[str, ...] = Field(
        (), max_length=20, description="here | channel | everyone | user ids (U…/W…) | user-group ids (S…)"
    )
    max_attempts: int = Field(3, ge=1, le=10, description="Sending attempts before the step fails.")
    backoff_seconds: float = Field(2.0, ge=0, le=300, description="First wait between attempts (doubles).")

    @field_validator("webhook_url")
    @classmethod
    def _url_shape(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_webhook_url(value, allow_loopback=True)  # the environment's rules apply when sending
            except UnsafeWebhookError as exc:
                raise ValueError(exc.reason) from None
        return value

    @field_validator("mentions")
    @classmethod
    def _mentions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [m for m in value if not _MENTION.fullmatch(m)]
        if bad:
            raise ValueError(f"invalid mention {bad[0]!r}: here, channel, everyone, U…/W… or S… ids")
        return value


def _mention(name: str) -> str:
    if name in {"here", "channel", "everyone"}:
        return f"<!{name}>"
    return f"<!subteam^{name}>" if name.startswith("S") else f"<@{name}>"


def _escape(value: str) -> str:
    """Slack's control characters, so a value (an error message, say) cannot ping ``<!channel>``
    or forge a link; the template's own markup is kept."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(config: SlackConfig, values: Mapping[str, str]) -> dict[str, Any]:
    text = render(config.text, {name: _escape(value) for name, value in values.items()})
    if config.mentions:
        text = " ".join(_mention(m) for m in config.mentions) + " " + text
    body: dict[str, Any] = {"text": text}
    if config.channel:
        body["channel"] = config.channel
    if config.username:
        body["username"] = config.username
    if config.icon_emoji:
        body["icon_emoji"] = config.icon_emoji
    return body


async def send_slack(
    settings: Settings,
    config: SlackConfig,
    url: str | None,
    values: Mapping[str, str],
    *,
    source: Literal["step", "org"],
) -> Delivery:
    if not url:
        return Delivery(
            "slack",
            "SKIPPED",
            error="no Slack webhook: the step sets no webhook_url and the organization has none "
            "(PUT /api/v1/organizations/<org>/notifications)",
        )
    from src.core.notify.webhook_post import post_once

    return await deliver(
        "slack",
        lambda: post_once(settings, url, payload(config, values)),
        max_attempts=config.max_attempts,
        backoff_seconds=config.backoff_seconds,
        detail={"webhook": source},
    )
