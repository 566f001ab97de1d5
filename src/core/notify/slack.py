"""Slack notifications: one JSON POST to an incoming-webhook URL (httpx).

Before each attempt the URL's host is resolved and every address checked
(``webhook_url.resolve_checked``); the request then connects to a checked address
(``PinnedTransport``), follows no redirects and ignores proxy settings from the environment.
Errors name the HTTP status or the kind of failure, never the URL.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import httpcore
import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from src.app.config import Settings
from src.core.notify.delivery import Delivery, DeliveryError, deliver
from src.core.notify.templates import render
from src.core.notify.webhook_url import UnresolvableWebhookError, UnsafeWebhookError, parse_webhook_url, resolve_checked

DEFAULT_TEXT = (
    "*{status}*: `{pipeline_id}` for `{org_slug}` ({window})\n"
    "Failed step: {failed_step} | Error: {error}\n"
    "Rows loaded: {rows_processed} | Duration: {duration}\n"
    "Run: {run_url}"
)
_MENTION = re.compile(r"^(here|channel|everyone|[UW][A-Z0-9]{2,20}|S[A-Z0-9]{2,20})$")
_SLACK_ERROR = re.compile(rb"^[a-z_]{1,64}$")  # Slack answers errors as short tokens: no_service, ...
_MAX_BODY = 256


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


class _FixedAddress(httpcore.AsyncNetworkBackend):
    """Connects to one already-checked address whatever host name the request carries (TLS still
    verifies the certificate against the host name)."""

    def __init__(self, address: str) -> None:
        self._address = address
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_tcp(
            self._address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used for webhooks")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, address: str) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=_FixedAddress(address),
            max_connections=1,
        )


async def _post_once(settings: Settings, url: str, body: dict[str, Any]) -> None:
    try:
        addresses = await resolve_checked(url, allow_loopback=settings.is_local)
    except UnresolvableWebhookError as exc:
        raise DeliveryError(exc.message) from None
    except UnsafeWebhookError as exc:
        raise DeliveryError(exc.message, retryable=False) from None
    timeout = settings.webhook_timeout_seconds
    client = httpx.AsyncClient(
        transport=PinnedTransport(addresses[0]), timeout=timeout, follow_redirects=False, trust_env=False
    )
    try:
        async with asyncio.timeout(timeout * 2), client, client.stream("POST", url, json=body) as response:
            status = response.status_code
            answer = b""
            async for chunk in response.aiter_bytes():
                answer += chunk
                if len(answer) >= _MAX_BODY:
                    break
    except (httpx.TimeoutException, TimeoutError):
        raise DeliveryError(f"webhook timed out after {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise DeliveryError(f"webhook unreachable ({type(exc).__name__})") from None
    if 200 <= status < 300:
        return
    token = answer.strip()
    detail = f" ({token.decode()})" if _SLACK_ERROR.fullmatch(token) else ""
    raise DeliveryError(f"webhook answered HTTP {status}{detail}", retryable=status == 429 or status >= 500)


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
    return await deliver(
        "slack",
        lambda: _post_once(settings, url, payload(config, values)),
        max_attempts=config.max_attempts,
        backoff_seconds=config.backoff_seconds,
        detail={"webhook": source},
    )
