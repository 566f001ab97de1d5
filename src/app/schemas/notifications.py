"""Request and response bodies of the notification preference routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

MAX_EMAILS = 20
Event = Literal["failure", "success"]


def _on_failure_only() -> list[Event]:
    return ["failure"]


class NotificationPreferencesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    emails: list[EmailStr] = Field(
        default_factory=list, max_length=MAX_EMAILS, description="Recipients of every notifying run."
    )
    slack_webhook_url: str | None = Field(
        None,
        max_length=2048,
        description="Slack incoming-webhook URL (https). Omit to keep the stored one, null to remove it. "
        "Stored encrypted, shown back masked.",
    )
    on: list[Event] = Field(default_factory=_on_failure_only, description="Outcomes that notify.")

    @field_validator("emails")
    @classmethod
    def _unique_emails(cls, value: list[str]) -> list[str]:
        seen: dict[str, str] = {}
        for email in value:
            seen.setdefault(email.lower(), email)
        return list(seen.values())

    @field_validator("on")
    @classmethod
    def _unique_events(cls, value: list[Event]) -> list[Event]:
        return [e for e in ("failure", "success") if e in value]


class NotificationPreferencesResponse(BaseModel):
    org_slug: str
    emails: list[str]
    on: list[str]
    slack_webhook_configured: bool
    slack_webhook_url_masked: str | None = Field(description="e.g. https://hooks.slack.com/services/T000…/…abcd")
