"""Reading files under ``configs/``: YAML parsing and typed models with errors that name the file,
the field path and the reason (``ConfigError``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from src.core.errors import ConfigError

# libyaml's loader where PyYAML was built with it (~10x faster than the pure-Python one), same rules.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path, root: Path) -> Any:
    rel = str(path.relative_to(root))
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise ConfigError(rel, where, f"invalid YAML: {getattr(exc, 'problem', exc)}") from None


def validation_to_config_error(file: str, exc: ValidationError, prefix: str = "") -> ConfigError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return ConfigError(file, f"{prefix}{loc}".strip("."), err["msg"])


def parse_model(model: type[BaseModel], raw: Any, *, file: str, prefix: str = "") -> Any:
    try:
        return model.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        raise validation_to_config_error(file, exc, prefix) from None
