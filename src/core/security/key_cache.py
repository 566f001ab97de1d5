"""In-process caches of API-key lookups, so a warm request never touches the warehouse.

* ``KeyCache`` — verified keys (bounded in size and lifetime, TTL <= 60 s). Revocation, rotation
  and suspension drop the org's entries of this instance at once; other instances see the change
  within the TTL.
* ``UnknownKeys`` — a negative cache of its own: well-formed keys the warehouse did not know,
  remembered briefly so a flood of made-up keys costs one lookup each at most once per lifetime.
  It is bounded separately and evicts only its own oldest entries: unknown keys can never push
  a valid key out of ``KeyCache``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    org_slug: str
    key_id: str
    expires_at: datetime | None
    org_status: str
    scopes: frozenset[str]
    superseded: bool = False  # replaced by a rotation; works until expires_at (grace period)


class KeyCache:
    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, KeyIdentity]] = OrderedDict()

    def get(self, key_hash: str) -> KeyIdentity | None:
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        stored_at, identity = entry
        if time.monotonic() - stored_at > self._ttl:
            self._entries.pop(key_hash, None)
            return None
        return identity

    def put(self, key_hash: str, identity: KeyIdentity) -> None:
        if self._ttl <= 0:
            return
        self._entries[key_hash] = (time.monotonic(), identity)
        self._entries.move_to_end(key_hash)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def invalidate_org(self, org_slug: str) -> None:
        for key_hash, (_, identity) in list(self._entries.items()):
            if identity.org_slug == org_slug:
                self._entries.pop(key_hash, None)

    def clear(self) -> None:
        self._entries.clear()


class UnknownKeys:
    """Hashes of keys the warehouse did not know, each for ``ttl_seconds`` (bounded, oldest out)."""

    def __init__(self, ttl_seconds: float, max_entries: int) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, key_hash: str) -> bool:
        stored_at = self._seen.get(key_hash)
        if stored_at is None:
            return False
        if time.monotonic() - stored_at > self._ttl:
            self._seen.pop(key_hash, None)
            return False
        return True

    def add(self, key_hash: str) -> None:
        if self._ttl <= 0 or self._max <= 0:
            return
        self._seen[key_hash] = time.monotonic()
        self._seen.move_to_end(key_hash)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)
