"""Bodies of the plan, suspension and key routes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
