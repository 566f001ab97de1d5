"""Bodies of the plan, suspension and key routes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from src.core.security import scopes


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
    scopes: list[str] | None = Field(
        None,
        min_length=1,
        max_length=len(scopes.ALL),
        description=f"The new key's scopes, a subset of the calling key's (default: the same): {list(scopes.ALL)}.",
    )

    @field_validator("scopes")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (bad := scopes.unknown(value)):
            raise ValueError(f"unknown scopes {bad}; known: {list(scopes.ALL)}")
        return value
