"""Webhook URLs are secrets and a way out of the network: check them, mask them, pin them.

* ``https`` only; ``http`` only to a loopback host, and loopback only when allowed (development).
* The host is resolved and **every** address must be public (``ipaddress.is_global``, not
  multicast): private, loopback, link-local (cloud metadata at 169.254.169.254), shared, reserved
  and IPv4-mapped forms of those are refused before any connection is made.
* The sender then connects to an address that was checked (no second DNS lookup: see
  ``webhook_post.PinnedTransport``), so a DNS answer that changes in between cannot redirect it.

Messages never contain the URL.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from src.core.errors import ValidationFailedError

MAX_URL_LENGTH = 2048
_RESOLVE_TIMEOUT = 5.0
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeWebhookError(ValidationFailedError):
    code = "invalid_webhook_url"

    def __init__(self, reason: str) -> None:
        super().__init__(f"slack_webhook_url {reason}", details={"field": "slack_webhook_url"})
        self.reason = reason


class UnresolvableWebhookError(UnsafeWebhookError):
    """The host name did not resolve (may be temporary)."""


def _address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _unmapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def address_allowed(ip: IPAddress, *, allow_loopback: bool) -> bool:
    ip = _unmapped(ip)
    if ip.is_loopback:
        return allow_loopback
    return ip.is_global and not ip.is_multicast


def _is_loopback_name(host: str) -> bool:
    ip = _address(host)
    return host == "localhost" if ip is None else _unmapped(ip).is_loopback


def parse_webhook_url(url: str, *, allow_loopback: bool) -> tuple[str, int]:
    """Syntax and scheme rules (no network): returns (host, port)."""
    if len(url) > MAX_URL_LENGTH or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise UnsafeWebhookError("is not a valid URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeWebhookError("is not a valid URL") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in {"https", "http"} or not host:
        raise UnsafeWebhookError("must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise UnsafeWebhookError("must not contain credentials")
    if parts.scheme == "http" and not (allow_loopback and _is_loopback_name(host)):
        raise UnsafeWebhookError(
            "must use https (http is only accepted for a loopback host in development)"
            if allow_loopback
            else "must use https"
        )
    return host, port or (443 if parts.scheme == "https" else 80)


async def resolve_checked(url: str, *, allow_loopback: bool) -> list[str]:
    """The URL's addresses, each one checked; raises ``UnsafeWebhookError`` before any connection."""
    host, port = parse_webhook_url(url, allow_loopback=allow_loopback)
    literal = _address(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=_RESOLVE_TIMEOUT
            )
        except (OSError, TimeoutError):
            raise UnresolvableWebhookError("has a host name that does not resolve") from None
        addresses = []
        for info in infos:
            ip = _address(str(info[4][0]).split("%", 1)[0])
            if ip is not None and ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise UnresolvableWebhookError("has a host name that does not resolve")
    if not all(address_allowed(ip, allow_loopback=allow_loopback) for ip in addresses):
        raise UnsafeWebhookError("must not point to a private, loopback, link-local or metadata address")
    return [str(ip) for ip in addresses]


def mask_webhook_url(url: str) -> str:
    """``https://hooks.slack.com/services/T000…/…abcd``: enough to recognise, not to use."""
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
    except ValueError:
        return "…"
    segments = [s for s in parts.path.split("/") if s]
    prefix = f"{parts.scheme}://{netloc}/"
    if len(segments) >= 2:
        prefix += f"{segments[0]}/"
        secret = "/".join(segments[1:])
    else:
        secret = "/".join(segments)
    if len(secret) < 16:
        return f"{prefix}…"
    return f"{prefix}{secret[:4]}…/…{secret[-4:]}"
