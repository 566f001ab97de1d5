"""The house rules of the code, held by the suite: the import contracts in ``pyproject.toml``
(``[tool.importlinter]``: layers, core ↛ app, engine ↛ pipeline/processors/services, routers ↛ engine,
no cycles between the packages of ``src/core``) and small modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 400
# Deterministic demo data generators are long tables of facts, not logic.
GENERATORS = {"src/core/demo/billing_export.py", "src/core/demo/aws_cur_export.py"}


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120)
    report = result.stdout[result.stdout.find("Contracts") :]
    assert result.returncode == 0, report
    assert "0 broken" in report, report


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(REPO)): n
        for path in (REPO / "src").rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not {k: v for k, v in long.items() if k not in GENERATORS}, long
