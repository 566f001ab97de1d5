"""Answers of the probes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    warehouse: str
    environment: str
    status: Literal["ready", "unavailable"]
    warehouse_reachable: bool
    bootstrapped: bool | None = Field(None, description="All central tables exist (absent when unreachable).")
    missing_tables: list[str] | None = None
    checked_at: str = Field(description="When this result was measured (answers are reused for a few seconds).")
