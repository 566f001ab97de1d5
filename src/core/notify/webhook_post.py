"""One webhook POST (httpx) to an address checked beforehand: the transport connects to that
address whatever the host name resolves to by then, follows no redirects, ignores proxy settings
from the environment and reads at most a short answer. Imported lazily (httpx is slow to import)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from src.core.notify.delivery import DeliveryError
from src.core.notify.webhook_url import UnresolvableWebhookError, UnsafeWebhookError, resolve_checked
from src.core.settings import Settings

_SLACK_ERROR = re.compile(rb"^[a-z_]{1,64}$")  # Slack answers errors as short tokens: no_service, ...
_MAX_BODY = 256


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


async def post_once(settings: Settings, url: str, body: dict[str, Any]) -> None:
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
