from __future__ import annotations

from pydantic import BaseModel, ConfigDict, StrictBool


class BootstrapRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    force_recreate_dataset: StrictBool = False
    force_recreate_tables: StrictBool = False
