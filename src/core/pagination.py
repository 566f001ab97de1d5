"""Cursor pagination: opaque ``page_token`` strings for the list routes.

A token is URL-safe base64 of ``{"v": 1, "f": <fingerprint>, "p": [...]}``: the position after the
last row of a page (the sort key of that row, or a row offset for aggregate reads) and a
fingerprint of the list's filters, so a token is only accepted by the list it came from. Tokens are
not secrets: a forged one can only move the reader within rows it may read anyway. A token that is
malformed, from another list or for other filters is a 422 ``invalid_page_token``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from src.core.errors import ValidationFailedError

MAX_TOKEN_LENGTH = 512
T = TypeVar("T")


def _fingerprint(kind: str, filters: Mapping[str, Any]) -> str:
    text = json.dumps([kind, {k: filters[k] for k in sorted(filters)}], default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def encode(kind: str, filters: Mapping[str, Any], position: Sequence[Any]) -> str:
    payload = {"v": 1, "f": _fingerprint(kind, filters), "p": [_plain(v) for v in position]}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _invalid(why: str) -> ValidationFailedError:
    return ValidationFailedError(
        f"page_token is not valid for this list ({why}); start again without it",
        code="invalid_page_token",
        details={"field": "page_token"},
    )


def decode(token: str | None, kind: str, filters: Mapping[str, Any], arity: int) -> list[Any] | None:
    """The position a token stands for (None without a token)."""
    if token is None:
        return None
    if len(token) > MAX_TOKEN_LENGTH:
        raise _invalid("too long")
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _invalid("not a token") from None
    if not isinstance(payload, dict) or payload.get("v") != 1:
        raise _invalid("not a token")
    if payload.get("f") != _fingerprint(kind, filters):
        raise _invalid("it belongs to another list or other filters")
    position = payload.get("p")
    if not isinstance(position, list) or len(position) != arity:
        raise _invalid("not a token")
    if any(not isinstance(v, str | int) or isinstance(v, bool) for v in position):
        raise _invalid("not a token")
    return position


def timestamp(value: Any) -> datetime:
    """A timestamp from a decoded position (aware, UTC)."""
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise _invalid("not a token") from None
    if parsed.tzinfo is None:
        raise _invalid("not a token")
    return parsed.astimezone(UTC)


def offset(value: Any, maximum: int = 10_000_000) -> int:
    if not isinstance(value, int) or not 0 <= value <= maximum:
        raise _invalid("not a token")
    return value


def page(
    rows: list[T], limit: int, kind: str, filters: Mapping[str, Any], position_of: Callable[[T], Sequence[Any]]
) -> tuple[list[T], str | None]:
    """Rows read with ``LIMIT limit + 1``: the page, and the token of the next one (None: the last)."""
    if len(rows) <= limit:
        return rows, None
    shown = rows[:limit]
    return shown, encode(kind, filters, position_of(shown[-1]))
