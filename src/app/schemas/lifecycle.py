"""Bodies of the plan, suspension and key routes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class SubscriptionRequest(_Body):
    subscription_plan: str = Field(min_length=1, max_length=40, description="STARTER, PROFESSIONAL or SCALE.")

    @field_validator("subscription_plan")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


class SuspendRequest(_Body):
    reason: str | None = Field(None, max_length=500)


class RotateRequest(_Body):
    grace_period_seconds: StrictInt = Field(
        0, ge=0, description="How long the old key keeps working (0 = revoked at once)."
    )
