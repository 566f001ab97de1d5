"""In-process cache of verified org keys, so a warm request never touches the warehouse.

Bounded in size and lifetime (TTL <= 60 s). Revocation, rotation and suspension invalidate the
entries of this instance at once; other instances see the change within the TTL.
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


class KeyCache:
    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, KeyIdentity | None]] = OrderedDict()

    def get(self, key_hash: str) -> tuple[bool, KeyIdentity | None]:
        """(hit, identity); a hit with None means 'known not to be a valid key'."""
        entry = self._entries.get(key_hash)
        if entry is None:
            return False, None
        stored_at, identity = entry
        if time.monotonic() - stored_at > self._ttl:
            self._entries.pop(key_hash, None)
            return False, None
        return True, identity

    def put(self, key_hash: str, identity: KeyIdentity | None) -> None:
        if self._ttl <= 0:
            return
        self._entries[key_hash] = (time.monotonic(), identity)
        self._entries.move_to_end(key_hash)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def invalidate_org(self, org_slug: str) -> None:
        for key_hash, (_, identity) in list(self._entries.items()):
            if identity is None or identity.org_slug == org_slug:
                self._entries.pop(key_hash, None)

    def clear(self) -> None:
        self._entries.clear()
