"""E-mail notifications over SMTP (aiosmtplib: async, never blocks the event loop).

``SMTP_HOST`` unset = not configured: the notification is SKIPPED with that reason. Implicit TLS
(``SMTP_USE_TLS``) or STARTTLS (``SMTP_STARTTLS``); login when ``SMTP_USERNAME`` is set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from src.core.notify.delivery import Delivery, DeliveryError, deliver
from src.core.notify.templates import one_line, render
from src.core.settings import Settings

DEFAULT_SUBJECT = "[Convergence] {status}: {pipeline_id} ({window})"
DEFAULT_BODY = """Pipeline {pipeline_id} for organization {org_slug}: {status}

Run:          {pipeline_logging_id}
Window:       {window}
Failed step:  {failed_step}
Error:        {error}
Rows written: {rows_processed}
Duration:     {duration}

Steps:
{steps_summary}

Run details: {run_url}
  curl -s {run_url} -H "X-API-Key: $CONVERGENCE_API_KEY"
"""
MAX_RECIPIENTS = 50


class EmailConfig(BaseModel):
    """An e-mail notification: recipients, templates and retry policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to_emails: tuple[EmailStr, ...] | None = Field(
        None, min_length=1, max_length=MAX_RECIPIENTS, description="Default: the organization's admin e-mail."
    )
    subject: str = Field(DEFAULT_SUBJECT, min_length=1, max_length=500)
    body: str = Field(DEFAULT_BODY, min_length=1, max_length=20_000)
    max_attempts: int = Field(3, ge=1, le=10, description="Sending attempts before the step fails.")
    backoff_seconds: float = Field(2.0, ge=0, le=300, description="First wait between attempts (doubles).")


NOT_CONFIGURED = "SMTP is not configured (SMTP_HOST is unset)"


def build_message(settings: Settings, recipients: Sequence[str], subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = ", ".join(recipients)
    message["Subject"] = one_line(subject)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=settings.smtp_from.rsplit("@", 1)[-1])
    message.set_content(body)
    return message


async def _send_once(settings: Settings, message: EmailMessage, recipients: Sequence[str]) -> None:
    import aiosmtplib  # on the first e-mail, not at start-up

    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    try:
        await aiosmtplib.send(
            message,
            sender=settings.smtp_from,
            recipients=list(recipients),
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=password if settings.smtp_username else None,
            use_tls=settings.smtp_use_tls,
            start_tls=False if settings.smtp_use_tls else settings.smtp_starttls,
            timeout=settings.smtp_timeout_seconds,
        )
    except aiosmtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(f"SMTP login refused ({exc.code})", retryable=False) from None
    except aiosmtplib.SMTPRecipientsRefused as exc:
        refused = ", ".join(getattr(r, "recipient", "?") for r in exc.recipients)
        raise DeliveryError(f"SMTP refused the recipients: {refused}"[:300], retryable=False) from None
    except aiosmtplib.SMTPResponseException as exc:
        # 4xx: try again later; 5xx: permanent.
        raise DeliveryError(f"SMTP {exc.code}: {one_line(exc.message, 200)}", retryable=exc.code < 500) from None
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise DeliveryError(f"{type(exc).__name__}: {one_line(str(exc), 200) or 'no detail'}") from None


async def send_email(
    settings: Settings, config: EmailConfig, recipients: Sequence[str], values: Mapping[str, str]
) -> Delivery:
    if not settings.smtp_host:
        return Delivery("email", "SKIPPED", error=NOT_CONFIGURED)
    if not recipients:
        return Delivery("email", "SKIPPED", error="no recipients")
    subject = one_line(render(config.subject, values))
    message = build_message(settings, recipients, subject, render(config.body, values))
    return await deliver(
        "email",
        lambda: _send_once(settings, message, recipients),
        max_attempts=config.max_attempts,
        backoff_seconds=config.backoff_seconds,
        detail={"recipients": list(recipients), "subject": subject},
    )
