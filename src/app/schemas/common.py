"""What every route shares: the error body, the declared error answers, and pagination.

Conventions (CLAUDE.md, "Typed answers"):

* every route declares ``response_model=`` (a model of this package) and ``responses=errors(...)``
  with each 4xx/5xx status it can answer, so ``/docs`` shows every body and schemathesis checks it;
* a list route takes ``limit: Annotated[int, limit_query(maximum)] = default`` and
  ``page_token: PageToken`` and answers a model derived from ``Page`` (``count`` of this page,
  ``next_page_token``: null on the last page).
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from src.core.pagination import MAX_TOKEN_LENGTH


class ErrorResponse(BaseModel):
    """Every refusal and error: a stable code, a message for people, the request id (also in the
    ``X-Request-ID`` header). Some errors add fields (e.g. a quota refusal's ``limit``)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="Stable machine-readable code, e.g. invalid_api_key, quota_exceeded.")
    message: str
    request_id: str


class FieldError(BaseModel):
    field: str
    reason: str


class ValidationErrorResponse(ErrorResponse):
    errors: list[FieldError] | None = Field(None, description="Each invalid field (request validation).")


_DESCRIPTIONS = {
    400: "The body is not valid JSON, or nested too deeply.",
    401: "No key, a wrong key, or an expired key.",
    403: "The key may not do this: another organization, a missing scope, a suspended organization, or an "
    "org key on an admin route.",
    404: "Not found (or not yours).",
    409: "Conflicts with the current state (e.g. a run already covers the window, bootstrap not done).",
    413: "The body is larger than allowed.",
    422: "Invalid input: a field, a parameter or a page token.",
    429: "A limit was reached (quota, failed authentications, admin calls); see Retry-After.",
    503: "The warehouse or a dependency is briefly unavailable; retry after Retry-After.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each error status it can answer, with its body model."""
    return {
        code: {"model": ValidationErrorResponse if code == 422 else ErrorResponse, "description": _DESCRIPTIONS[code]}
        for code in sorted(set(codes))
    }


# The statuses routes of a kind can answer (combine with extra codes: errors(*ORG, 409)).
AUTH = (401, 403, 429, 503)  # any route behind a key
ORG = (*AUTH, 404, 409, 422)  # an org route: unknown org 404, bootstrap missing 409, bad path/query 422
BODY = (400, 413, 422)  # a route with a JSON body


class Page(BaseModel):
    """Fields every list answer has."""

    count: int = Field(description="Items on this page.")
    next_page_token: str | None = Field(
        description="Pass as page_token for the next page; null on the last page.", max_length=MAX_TOKEN_LENGTH
    )


PageToken = Annotated[
    str | None,
    Query(
        max_length=MAX_TOKEN_LENGTH,
        pattern=r"^[A-Za-z0-9_\-]+$",
        description="next_page_token of the previous page (same filters).",
    ),
]


def limit_query(maximum: int) -> Any:
    """The ``Query`` of a list route's ``limit``: ``limit: Annotated[int, limit_query(500)] = 50``."""
    return Query(ge=1, le=maximum, description=f"Items per page (at most {maximum}).")


def _number_not_text(value: Any) -> Any:
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON number, not a string or a boolean")
    return value


# A JSON integer: 3 and 3.0 (the same number in JSON), never "3", true or 3.5. With bounds inside an
# optional field, write them before it: Annotated[int, Field(ge=1, le=9), NUMBER_NOT_TEXT] | None.
NUMBER_NOT_TEXT = BeforeValidator(_number_not_text)
WholeNumber = Annotated[int, NUMBER_NOT_TEXT]


def _iso_date_text(value: Any) -> Any:
    if isinstance(value, str) and not _ISO_DATE.fullmatch(value):
        raise ValueError("must be a date written YYYY-MM-DD")
    if isinstance(value, int | float | bool):
        raise ValueError("must be a date written YYYY-MM-DD")
    return value


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# A date in a query string or body: exactly YYYY-MM-DD (never a number read as a timestamp).
IsoDate = Annotated[date, BeforeValidator(_iso_date_text)]
