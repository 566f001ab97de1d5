"""``ps_type`` -> processor module, loaded dynamically but only from ``src/core/processors``.

``gcp.bq_etl`` resolves to ``src/core/processors/gcp/bq_etl.py``. The pipeline layer never imports
a processor statically: processors depend on the pipeline layer (``StepContext``), not the reverse.
The name must match a strict pattern and the file must exist under that directory before anything
is imported: a config can never import an arbitrary module.

Each module provides ``get_engine()`` returning an object with ``async execute(step_config, context)
-> dict``, and may provide ``Config`` (a pydantic model of its step ``config``, validated when
pipelines load), ``check_config`` (load-time checks that need ``configs/``), ``DEFAULT_ON_FAILURE``,
``TEMPLATE_VARIABLES`` (placeholders its config may use besides the pipeline's variables, e.g. a
run's ``{status}``) and ``check_defaults`` (checks of the ``defaults`` in its
``configs/<provider>/<name>/config.yml``).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from pydantic import BaseModel

PROCESSORS_DIR = Path(__file__).resolve().parents[1] / "processors"
PROCESSORS_PACKAGE = "src.core.processors"
_PS_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){1,3}$")


class ProcessorEngine(Protocol):
    async def execute(self, step_config: Any, context: Any) -> dict[str, Any]: ...


# Optional on an engine: ``async estimate(step_config, context) -> list[dict]``: what the step would
# read (dry-run statements: {statement, bytes_processed, rows}), for ``"dry_run": true`` requests.


@dataclass(frozen=True, slots=True)
class Processor:
    ps_type: str
    engine: ProcessorEngine
    config_model: type[BaseModel] | None
    default_on_failure: str
    check_config: Callable[..., None] | None = None  # (config, configs_dir, file, where): load-time checks
    template_variables: frozenset[str] = frozenset()
    check_defaults: Callable[..., None] | None = None  # (defaults, configs_dir, file)


class UnknownProcessorError(LookupError):
    pass


class ProcessorRegistry:
    def __init__(self) -> None:
        self._cache: dict[str, Processor] = {}

    def get(self, ps_type: str) -> Processor:
        found = self._cache.get(ps_type)
        if found is None:
            found = self._cache[ps_type] = self._load(ps_type)
        return found

    @staticmethod
    def _load(ps_type: str) -> Processor:
        if not _PS_TYPE_RE.fullmatch(ps_type):
            raise UnknownProcessorError(f"invalid ps_type {ps_type!r}")
        parts = ps_type.split(".")
        file = PROCESSORS_DIR.joinpath(*parts[:-1], f"{parts[-1]}.py")
        if not file.is_file() or PROCESSORS_DIR not in file.resolve().parents:
            raise UnknownProcessorError(
                f"no processor {ps_type!r} (expected {file.relative_to(PROCESSORS_DIR.parents[2])})"
            )
        module: ModuleType = importlib.import_module(f"{PROCESSORS_PACKAGE}.{ps_type}")
        get_engine = getattr(module, "get_engine", None)
        if not callable(get_engine):
            raise UnknownProcessorError(f"processor {ps_type!r} has no get_engine()")
        config_model = getattr(module, "Config", None)
        if config_model is not None and not (isinstance(config_model, type) and issubclass(config_model, BaseModel)):
            raise UnknownProcessorError(f"processor {ps_type!r}: Config is not a pydantic model")
        return Processor(
            ps_type=ps_type,
            engine=get_engine(),
            config_model=config_model,
            default_on_failure=getattr(module, "DEFAULT_ON_FAILURE", "stop"),
            check_config=getattr(module, "check_config", None),
            template_variables=frozenset(getattr(module, "TEMPLATE_VARIABLES", ())),
            check_defaults=getattr(module, "check_defaults", None),
        )
