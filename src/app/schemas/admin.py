from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class BootstrapRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    force_recreate_dataset: bool = False
    force_recreate_tables: bool = False
