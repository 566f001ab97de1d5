"""Pure pieces behind the abuse limits and the API contract: the client address behind proxies, the
JSON depth check, the key-lookup budget, the negative key cache and page tokens."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from src.app.client_address import client_address
from src.app.middleware import MAX_JSON_DEPTH, too_deep
from src.core import pagination
from src.core.errors import ValidationFailedError
from src.core.security.key_cache import UnknownKeys
from src.core.security.rate_limit import TokenBucket


@pytest.mark.parametrize(
    ("headers", "hops", "expected"),
    [
        ([b"1.1.1.1"], 0, "10.0.0.1"),  # no proxy: the header is the client's own writing
        ([b"6.6.6.6, 203.0.113.7"], 1, "203.0.113.7"),  # Cloud Run appended the real address
        ([b"6.6.6.6", b"203.0.113.7"], 1, "203.0.113.7"),  # repeated headers count as one list
        ([b"6.6.6.6, 203.0.113.7, 10.1.1.1"], 2, "203.0.113.7"),  # two proxies
        ([b"203.0.113.7"], 2, "203.0.113.7"),  # fewer entries than hops: the leftmost is a proxy's
        ([], 1, "10.0.0.1"),  # no header at all: the peer
        ([b" , "], 1, "10.0.0.1"),
    ],
)
def test_the_client_is_the_entry_trusted_hops_from_the_right(headers: list[bytes], hops: int, expected: str) -> None:
    assert client_address("10.0.0.1", headers, hops) == expected


def test_deep_json_is_found_without_parsing() -> None:
    assert too_deep(b"[" * 200_000)
    assert too_deep(b'{"a":' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1))
    assert not too_deep(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    assert not too_deep(json.dumps({"s": "[" * 1000, "t": '\\"[[[' * 100}).encode())  # brackets in strings
    assert not too_deep(json.dumps([[1, 2]] * 10_000).encode())  # many, but shallow


def test_the_lookup_budget_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_seconds() >= 1
    time.sleep(0.15)  # 1.5 tokens back
    assert bucket.take() and not bucket.take()
    assert all(TokenBucket(rate=0, burst=1).take() for _ in range(100))  # 0 = unlimited


def test_unknown_keys_are_bounded_and_forgotten() -> None:
    unknown = UnknownKeys(ttl_seconds=0.2, max_entries=3)
    for n in range(5):
        unknown.add(f"h{n}")
    assert len(unknown) == 3 and "h0" not in unknown and "h4" in unknown
    time.sleep(0.25)
    assert "h4" not in unknown
    disabled = UnknownKeys(ttl_seconds=0, max_entries=10)
    disabled.add("h")
    assert "h" not in disabled


def test_page_tokens_round_trip_and_belong_to_their_list() -> None:
    at = datetime(2026, 11, 20, 12, 0, 0, 123456, tzinfo=UTC)
    token = pagination.encode("runs", {"org": "acme", "status": None}, [at, "run-1"])
    position = pagination.decode(token, "runs", {"status": None, "org": "acme"}, 2)
    assert position is not None and pagination.timestamp(position[0]) == at and position[1] == "run-1"
    assert pagination.decode(None, "runs", {}, 2) is None
    for bad, kind, filters in (
        (token, "keys", {"org": "acme", "status": None}),  # another list
        (token, "runs", {"org": "other", "status": None}),  # other filters
        ("!!!", "runs", {}),
        ("e30", "runs", {}),  # {} : not a token
        ("A" * 600, "runs", {}),
    ):
        with pytest.raises(ValidationFailedError) as refused:
            pagination.decode(bad, kind, filters, 2)
        assert refused.value.code == "invalid_page_token"
    rows = list(range(5))
    shown, next_token = pagination.page(rows, 4, "n", {}, lambda r: (r,))
    assert shown == [0, 1, 2, 3] and pagination.decode(next_token, "n", {}, 1) == [3]
    assert pagination.page(rows, 5, "n", {}, lambda r: (r,)) == (rows, None)
