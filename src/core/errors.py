"""The one error hierarchy of the service.

Domain code raises these; only ``src/app/exception_handlers.py`` turns them into HTTP responses.
Each class carries its HTTP status and a stable machine-readable ``code``; ``message`` is safe to
show to the caller (never SQL, a stack trace or a secret).
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status_code: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}
        self.headers = headers or {}


class BadRequestError(ServiceError):
    status_code = 400
    code = "bad_request"


class AuthenticationError(ServiceError):
    status_code = 401
    code = "unauthorized"


class PermissionDeniedError(ServiceError):
    status_code = 403
    code = "forbidden"


class NotFoundError(ServiceError):
    status_code = 404
    code = "not_found"


class ConflictError(ServiceError):
    status_code = 409
    code = "conflict"


class PayloadTooLargeError(ServiceError):
    status_code = 413
    code = "payload_too_large"


class ValidationFailedError(ServiceError):
    status_code = 422
    code = "validation_error"


class TooManyRequestsError(ServiceError):
    status_code = 429
    code = "too_many_requests"


class ServiceUnavailableError(ServiceError):
    status_code = 503
    code = "service_unavailable"


class ConfigError(ServiceError):
    """A file under ``configs/`` is invalid: names the file, the field path and the reason."""

    status_code = 500
    code = "config_error"

    def __init__(self, file: str, field: str, reason: str) -> None:
        self.file = file
        self.field = field
        self.reason = reason
        where = f"{file}: {field}" if field else file
        super().__init__(f"{where}: {reason}")


# --- warehouse boundary -------------------------------------------------------------------------


class WarehouseError(ServiceError):
    """Raised by the warehouse layer only; driver exceptions never cross it."""

    status_code = 500
    code = "warehouse_error"


class TransientWarehouseError(WarehouseError):
    """Worth retrying: rate limits, 5xx, lock or concurrent-update conflicts."""

    status_code = 503
    code = "warehouse_unavailable"


class TerminalWarehouseError(WarehouseError):
    """Retrying will not help: invalid query, denied, bad data."""

    status_code = 500
    code = "warehouse_error"


class WarehouseNotFoundError(TerminalWarehouseError):
    status_code = 404
    code = "not_found"


class WarehouseAccessDeniedError(TerminalWarehouseError):
    status_code = 403
    code = "access_denied"


# --- a customer's cloud storage (AWS S3/STS) ------------------------------------------------------


class SourceError(ServiceError):
    """A customer's cloud storage failed a request (raised by ``src/core/aws`` only; boto errors never
    cross it). Messages name the bucket, key or role, never a secret."""

    status_code = 502
    code = "source_error"


class SourceCredentialsError(SourceError):
    """The credentials were refused (unknown key, bad signature, expired, role not assumable)."""

    status_code = 422
    code = "aws_credentials_invalid"


class SourceAccessDeniedError(SourceError):
    status_code = 422
    code = "aws_access_denied"


class SourceNotFoundError(SourceError):
    status_code = 422
    code = "aws_object_not_found"


class TransientSourceError(SourceError):
    """Worth retrying: throttling, 5xx, timeouts, connection errors."""

    status_code = 503
    code = "source_unavailable"


# --- pipelines ----------------------------------------------------------------------------------


class StepFailedError(ServiceError):
    """A processor reports that its step failed (the message is stored in the step log).

    ``retryable=False`` for deterministic failures (e.g. a reconciliation mismatch): the step's
    ``retries`` are not spent on them.
    """

    status_code = 500
    code = "step_failed"

    def __init__(self, message: str, *, code: str | None = None, retryable: bool = True) -> None:
        super().__init__(message, code=code)
        self.retryable = retryable
