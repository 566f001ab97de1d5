"""A notification processor's defaults (``configs/notify_systems/<name>/config.yml``): checked at
startup, merged under each step's own settings when it runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from src.core.config_io import read_yaml, validation_to_config_error
from src.core.errors import ConfigError
from src.core.notify.templates import DEFAULTS_VARIABLES, unknown_placeholders

M = TypeVar("M", bound=BaseModel)


def config_file(configs_dir: Path, processor: str) -> Path:
    return configs_dir.joinpath(*processor.split(".")) / "config.yml"


@lru_cache(maxsize=8)
def _raw_defaults(configs_dir: Path, processor: str) -> dict[str, Any]:
    path = config_file(configs_dir, processor)
    if not path.is_file():
        return {}
    raw = read_yaml(path, configs_dir) or {}
    defaults = raw.get("defaults") if isinstance(raw, dict) else None
    return dict(defaults) if isinstance(defaults, dict) else {}


def effective(model: type[M], configs_dir: Path, processor: str, step_config: M | None = None) -> M:
    """The processor's defaults with the step's explicitly set fields on top."""
    own = step_config.model_dump(exclude_unset=True) if step_config is not None else {}
    return model.model_validate({**_raw_defaults(configs_dir, processor), **own})


def check_defaults(model: type[BaseModel], defaults: Mapping[str, Any], file: str, templates: Iterable[str]) -> None:
    """The defaults form a valid config and their templates name only built-in run variables."""
    try:
        parsed = model.model_validate(dict(defaults))
    except ValidationError as exc:
        raise validation_to_config_error(file, exc, "defaults.") from None
    for name in templates:
        bad = unknown_placeholders([getattr(parsed, name)], DEFAULTS_VARIABLES)
        if bad:
            raise ConfigError(file, f"defaults.{name}", f"unknown placeholder {{{bad[0]}}}")
