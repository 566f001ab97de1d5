"""Who is the client: the address the per-client limits and the access log see.

Behind ``TRUSTED_PROXY_HOPS`` proxies (Cloud Run's front end: 1), each proxy appends the address it
received the request from to ``X-Forwarded-For``; everything to the left of those entries was
written by the client and is ignored. The client is therefore the entry ``TRUSTED_PROXY_HOPS``
places from the right. With 0 hops (a laptop, a test) the header is ignored and the TCP peer is the
client. uvicorn's own proxy-header handling is off (``src/app/__main__.py``): it trusts the
*leftmost* entry, which the client chooses.
"""

from __future__ import annotations

from collections.abc import Iterable

CLIENT_SCOPE_KEY = "convergence.client"  # where the middleware keeps it in the ASGI scope


def client_address(peer: str, forwarded_for: Iterable[bytes], trusted_hops: int) -> str:
    """The client's address given the TCP ``peer``, the raw ``X-Forwarded-For`` header values (in
    the order received) and the number of trusted proxy hops in front of the service."""
    if trusted_hops <= 0:
        return peer
    entries = [e.strip() for value in forwarded_for for e in value.decode("latin-1").split(",")]
    entries = [e for e in entries if e]
    if not entries:
        return peer  # no proxy in front after all (e.g. a health check from inside)
    # Fewer entries than hops: the outermost proxies did not add one; the leftmost is still a proxy's.
    candidate = entries[-trusted_hops] if len(entries) >= trusted_hops else entries[0]
    return candidate[:64]
