"""Org API keys: ``{org_slug}_api_{16 random chars}``, looked up by SHA-256 hash."""

from __future__ import annotations

import hashlib
import re
import secrets
import string

ORG_SLUG_PATTERN = r"^[a-z0-9_]{3,50}$"  # lowercase letters, digits, underscore; 3-50
ORG_SLUG_RE = re.compile(ORG_SLUG_PATTERN)
_KEY_RE = re.compile(r"^(?P<org>[a-z0-9_]{3,50})_api_(?P<secret>[A-Za-z0-9]{16})$")
_ALPHABET = string.ascii_letters + string.digits


def generate_api_key(org_slug: str) -> str:
    return f"{org_slug}_api_{''.join(secrets.choice(_ALPHABET) for _ in range(16))}"


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_org(key: str) -> str | None:
    """The org a well-formed key names, or None for anything that is not a key."""
    match = _KEY_RE.fullmatch(key)
    return match.group("org") if match else None


def key_prefix(key: str) -> str:
    """What may be shown of a key: the org part and the first 4 secret characters."""
    return key[: key.rindex("_api_") + 5 + 4] + "…"


def new_key_id() -> str:
    return f"key_{secrets.token_hex(8)}"
