"""Run the FinOps Foundation's FOCUS validator (PyPI ``focus-validator`` 2.2.1) offline, from tests.

The validator needs Python 3.12 and pins numpy < 2, so it lives in its own virtualenv (``.venv-focus``,
made by :func:`ensure_venv` with the 3.12 interpreter pyenv provides). :func:`validate` runs it on a CSV or
Parquet file and returns the counts of its summary line and the failed rules.

How it is run, and why (details: ``tests/FOCUS_1_2_RULES.md``):

* from its own site-packages folder (it opens ``focus_validator/rules/currency_codes.csv`` relative to the
  working directory), with ``--block-download`` (offline it ships the FOCUS 1.2 rules only);
* with a logging config of ours (``LOGGING_CONFIG``): its own one writes a DEBUG log file into the working
  directory, which costs time and makes concurrent runs share one file;
* it exits 0 even when rules fail: the result is parsed from its console report (the summary line
  ``Total: N | Pass: N | Fail: N | Skipped: N``, one status line per rule, and the ``--- Failures ---``
  section with each failure's reason). Its ``--output-type unittest`` report is not used: it replaces the
  console report (one run gives one or the other), its failure messages are generic ("Composite check for
  X"), and it splits failures into ``failures`` and ``errors``. The parser checks that the status lines add
  up to the summary line, so a change of format fails loudly instead of reading as "Fail: 0".
* ``errata=True`` (the default) validates against a copy of the bundled rules with the defects listed in
  :data:`ERRATA` corrected: with the bundled rules no non-empty dataset can reach ``Fail: 0``
  (InvoiceId-C-004-C / C-005-C contradict each other), and several conditions check nothing. Every
  erratum makes the machine check say what the rule's own ``MustSatisfy`` text says (none relaxes a rule
  beyond its text); ``Result.errata`` lists the rules changed. ``errata=False`` runs the bundled rules.

Shell: ``python -m tests.focus_validator FILE [--criteria LIST|ALL] [--no-errata]`` prints the summary and
the failed rules; exit status 1 when Fail > 0, 2 when the validator could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VENV = REPO / ".venv-focus"
PYTHON_MINOR = "3.12"
PACKAGES = ("focus-validator==2.2.1", "pyarrow<20")  # newest pyarrow needs numpy >= 2, the validator pins < 2
RULES_FILE = "model-1.2.0.1.json"  # the FOCUS 1.2 rules bundled with 2.2.1
_MARKER = ".convergence-focus-validator"  # written once the pinned packages are installed

_SUMMARY_RE = re.compile(r"^Total: (\d+) \| Pass: (\d+) \| Fail: (\d+) \| Skipped: (\d+)\s*$", re.M)
_STATUS_RE = re.compile(r"^(?:\S+|\[[A-Z]+\]) ([A-Za-z]+-[A-Z]-\d{3}-[A-Z]): (PASS|FAIL|SKIPPED)\b", re.M)
_FAILURE_RE = re.compile(r"^- ([A-Za-z]+-[A-Z]-\d{3}-[A-Z]): violations=([^;]*); (.*)$")
_LOGGING_CONFIG = """\
version: 1
disable_existing_loggers: false
handlers:
  stderr: {class: logging.StreamHandler, stream: ext://sys.stderr, level: WARNING}
root: {level: WARNING, handlers: [stderr]}
"""


class FocusValidatorError(RuntimeError):
    """The validator could not be installed or run, or its report could not be read."""


@dataclass(frozen=True)
class RuleFailure:
    rule_id: str
    violations: int | None  # rows (or 1 for a composite / presence rule); None when not reported
    message: str
    must_satisfy: str = ""


@dataclass(frozen=True)
class Result:
    total: int
    passed: int
    failed: int
    skipped: int
    failures: tuple[RuleFailure, ...]
    statuses: Mapping[str, str]  # rule id -> PASS | FAIL | SKIPPED
    summary_line: str
    command: tuple[str, ...]
    criteria: tuple[str, ...]
    errata: tuple[str, ...]  # ids of the rules validated in corrected form
    seconds: float
    output: str = field(repr=False)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @property
    def failed_ids(self) -> frozenset[str]:
        return frozenset(rule for rule, status in self.statuses.items() if status == "FAIL")

    def describe(self, limit: int = 40) -> str:
        lines = [self.summary_line + (f"  (errata: {len(self.errata)} rules)" if self.errata else "")]
        lines += [f"  FAIL {f.rule_id}: {f.message}" for f in self.failures[:limit]]
        if len(self.failures) > limit:
            lines.append(f"  ... and {len(self.failures) - limit} more")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# The virtualenv
# --------------------------------------------------------------------------------------------------


def _interpreter(python: str | Path, env: Mapping[str, str] | None = None) -> tuple[str, Path] | None:
    """(major.minor, real executable) of ``python``, or None when it does not run."""
    try:
        out = subprocess.run(
            [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2]); print(sys.executable)"],
            capture_output=True,
            text=True,
            timeout=30,
            env=dict(env) if env is not None else None,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.split()
    return (lines[0], Path(lines[1])) if out.returncode == 0 and len(lines) == 2 else None


def find_python312() -> Path:
    """The Python 3.12 interpreter: $FOCUS_PYTHON, else pyenv's newest 3.12.x, else ``python3.12`` on PATH."""
    candidates: list[tuple[Path, dict[str, str] | None]] = []
    if os.environ.get("FOCUS_PYTHON"):
        candidates.append((Path(os.environ["FOCUS_PYTHON"]), None))
    pyenv = shutil.which("pyenv")
    shim = shutil.which(f"python{PYTHON_MINOR}")
    if pyenv:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            bare = subprocess.run([pyenv, "versions", "--bare"], capture_output=True, text=True, timeout=30).stdout
            root = subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=30).stdout.strip()
            versions = [v for v in bare.split() if re.fullmatch(r"3\.12\.\d+", v)]
            for version in sorted(versions, key=lambda v: int(v.rsplit(".", 1)[1]), reverse=True):
                candidates.append((Path(root) / "versions" / version / "bin" / f"python{PYTHON_MINOR}", None))
                if shim:  # pyenv's shim runs 3.12 only when PYENV_VERSION selects it
                    candidates.append((Path(shim), {**os.environ, "PYENV_VERSION": version}))
    if shim:
        candidates.append((Path(shim), None))
    for python, env in candidates:
        found = _interpreter(python, env) if python.exists() else None
        if found and found[0] == PYTHON_MINOR:
            return found[1]
    raise FocusValidatorError(
        f"focus-validator 2.2.1 needs Python {PYTHON_MINOR}, and none was found (looked at $FOCUS_PYTHON, "
        f"`pyenv versions`, python{PYTHON_MINOR} on PATH). Install it (`pyenv install {PYTHON_MINOR}`) or set "
        f"FOCUS_PYTHON=/path/to/python{PYTHON_MINOR}."
    )


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3.*/site-packages/focus_validator"))
    if not found:
        raise FocusValidatorError(f"focus_validator is not installed in {venv}")
    return found[-1].parent


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: Sequence[str | Path], timeout: float, what: str) -> None:
    try:
        done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise FocusValidatorError(f"{what}: timed out after {timeout:.0f} s") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        raise FocusValidatorError(f"{what} failed (exit {done.returncode}):\n" + "\n".join(tail))


def ensure_venv(path: Path = DEFAULT_VENV, *, timeout: float = 900.0) -> Path:
    """The validator's virtualenv at ``path``, created and filled with :data:`PACKAGES` when missing.

    Fast (no subprocess) once the pinned packages are installed. Safe to call from parallel processes.
    """
    path = Path(path)
    marker = path / _MARKER
    wanted = "\n".join(PACKAGES)
    if marker.is_file() and marker.read_text() == wanted and (path / "bin" / "focus-validator").exists():
        return path
    with _lock(path.parent / f"{path.name}.lock"):
        if marker.is_file() and marker.read_text() == wanted and (path / "bin" / "focus-validator").exists():
            return path  # another process finished it while we waited
        python = path / "bin" / "python"
        if python.exists():
            found = _interpreter(python)
            if found is None or found[0] != PYTHON_MINOR:
                version = found[0] if found else "?"
                raise FocusValidatorError(f"{path} runs Python {version}, not {PYTHON_MINOR}: delete it and retry")
        else:
            _run([find_python312(), "-m", "venv", path], timeout, f"creating {path}")
        _run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PACKAGES],
            timeout,
            f"pip install {' '.join(PACKAGES)} into {path}",
        )
        _site_packages(path)
        marker.write_text(wanted)
    return path


# --------------------------------------------------------------------------------------------------
# Errata: defects of the bundled FOCUS 1.2 rules (model 1.2.0.1), corrected to their MustSatisfy text
# --------------------------------------------------------------------------------------------------

Rules = dict[str, Any]


def _value(column: str, value: str | None) -> dict[str, Any]:
    return {"CheckFunction": "CheckValue", "ColumnName": column, "Value": value}


def _not_value(column: str, value: str | None) -> dict[str, Any]:
    return {"CheckFunction": "CheckNotValue", "ColumnName": column, "Value": value}


def _criteria(rules: Rules, rule_id: str) -> dict[str, Any]:
    criteria: dict[str, Any] = rules[rule_id]["ValidationCriteria"]
    return criteria


def _invoice_id_alternatives(rules: Rules) -> list[str]:
    ids = ["InvoiceId-C-004-C", "InvoiceId-C-005-C"]
    for rule_id in ids:
        if rules[rule_id]["Type"] != "Static" or _criteria(rules, rule_id)["Condition"]:
            return []
    for rule_id in ids:
        rules[rule_id]["Type"] = "Dynamic"
    return ids


def _commitment_discount_status(rules: Rules) -> list[str]:
    changed = []
    c4 = _criteria(rules, "CommitmentDiscountStatus-C-004-C")
    if c4["Condition"] == _value("CommitmentDiscountId", None):
        c4["Condition"] = {
            "CheckFunction": "AND",
            "Items": [_not_value("CommitmentDiscountId", None), _value("ChargeCategory", "Usage")],
        }
        changed.append("CommitmentDiscountStatus-C-004-C")
    c5 = _criteria(rules, "CommitmentDiscountStatus-C-005-M")
    if [i.get("Value") for i in c5["Requirement"].get("Items", [])] == ["Active", "Expired", "Pending"]:
        c5["Requirement"] = {
            "CheckFunction": "OR",
            "Items": [_value("CommitmentDiscountStatus", "Used"), _value("CommitmentDiscountStatus", "Unused")],
        }
        changed.append("CommitmentDiscountStatus-C-005-M")
    return changed


def _capacity_reservation_status(rules: Rules) -> list[str]:
    fixed = {
        "CapacityReservationStatus-C-003-C": _value("CapacityReservationId", None),
        "CapacityReservationStatus-C-004-C": {
            "CheckFunction": "AND",
            "Items": [_not_value("CapacityReservationId", None), _value("ChargeCategory", "Usage")],
        },
    }
    changed = []
    for rule_id, condition in fixed.items():
        criteria = _criteria(rules, rule_id)
        if criteria["Condition"] and "CheckFunction" not in criteria["Condition"]:  # bundled: {"None": ...}
            criteria["Condition"] = condition
            changed.append(rule_id)
    return changed


def _consumed_quantity_correction(rules: Rules) -> list[str]:
    criteria = _criteria(rules, "ConsumedQuantity-C-006-C")
    if criteria["Condition"] != _value("ChargeClass", "Correction"):
        return []
    criteria["Condition"] = _not_value("ChargeClass", "Correction")  # widened to NULL by the next erratum
    return ["ConsumedQuantity-C-006-C"]


def _widen(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get("CheckFunction") in ("AND", "OR"):
            return {**node, "Items": [_widen(item) for item in node["Items"]]}
        if node.get("CheckFunction") == "CheckNotValue" and node.get("Value") is not None:
            return {"CheckFunction": "OR", "Items": [_value(node["ColumnName"], None), node]}
    return node


def _null_is_not_a_value(rules: Rules) -> list[str]:
    changed = []
    for rule_id, rule in rules.items():
        condition = rule["ValidationCriteria"].get("Condition")
        if condition and (widened := _widen(condition)) != condition:
            rule["ValidationCriteria"]["Condition"] = widened
            changed.append(rule_id)
    return changed


ERRATA: tuple[tuple[str, Callable[[Rules], list[str]]], ...] = (
    (
        "InvoiceId-C-004-C / C-005-C are the two alternatives of the OR rule InvoiceId-C-003-C, but the "
        "validator also runs each alone and unconditionally: C-004 wants every InvoiceId null, C-005 every "
        "one set, so any non-empty dataset fails one of them. Whether a charge belongs to an invoice is not "
        "in the data: both become Dynamic (skipped), as the spec's wording implies.",
        _invoice_id_alternatives,
    ),
    (
        "CommitmentDiscountStatus-C-004-C has the condition 'CommitmentDiscountId IS NULL' (the opposite of "
        "its text 'not null and ChargeCategory is Usage'), contradicting C-003-C; C-005-M lists Active / "
        "Expired / Pending where FOCUS 1.2 allows Used / Unused.",
        _commitment_discount_status,
    ),
    (
        "CapacityReservationStatus-C-003-C / C-004-C carry malformed conditions (no CheckFunction) that the "
        "validator drops, so C-003 demands the status be always null and C-004 never null.",
        _capacity_reservation_status,
    ),
    (
        "ConsumedQuantity-C-006-C ('MUST NOT be null when ChargeClass is not Correction') is conditioned on "
        "ChargeClass = 'Correction'.",
        _consumed_quantity_correction,
    ),
    (
        "Conditions 'X is not V' compile to 'X IS NOT NULL AND X <> V', so they never match rows where X is "
        "null: with ChargeClass null (every ordinary row) the Usage-row rules for SkuId, SkuPriceId, "
        "PricingQuantity, ListUnitPrice, ContractedUnitPrice, PricingCategory, ConsumedQuantity and the "
        "ListCost / ContractedCost products check nothing. Such conditions are widened to 'X IS NULL OR "
        "X <> V' (this only adds checks).",
        _null_is_not_a_value,
    ),
)


def write_corrected_rules(bundled: Path, directory: Path) -> tuple[str, ...]:
    """Write ``bundled`` with :data:`ERRATA` applied into ``directory``; return the ids of the changed rules."""
    model = json.loads(bundled.read_text(encoding="utf-8"))
    rules = copy.deepcopy(model["ModelRules"])
    changed: list[str] = []
    for _reason, apply in ERRATA:
        changed += [rule_id for rule_id in apply(rules) if rule_id not in changed]
    model["ModelRules"] = rules
    (directory / bundled.name).write_text(json.dumps(model, indent=1), encoding="utf-8")
    return tuple(changed)


# --------------------------------------------------------------------------------------------------
# Running it
# --------------------------------------------------------------------------------------------------


def bundled_rules(venv: Path | None = None) -> dict[str, Any]:
    """The validator's bundled FOCUS 1.2 rules model (the JSON it validates with), unchanged."""
    site = _site_packages(ensure_venv(venv or DEFAULT_VENV))
    model: dict[str, Any] = json.loads((site / "focus_validator" / "rules" / RULES_FILE).read_text(encoding="utf-8"))
    return model


def parse_report(output: str) -> tuple[tuple[int, int, int, int], str, dict[str, str], tuple[RuleFailure, ...]]:
    """(total, pass, fail, skipped), the summary line, status per rule and the failures of a console report."""
    summary = _SUMMARY_RE.search(output)
    if summary is None:
        raise FocusValidatorError("no 'Total: … | Fail: …' summary line in the validator's output")
    total, passed, failed, skipped = (int(g) for g in summary.groups())
    statuses = {m.group(1): m.group(2) for m in _STATUS_RE.finditer(output)}
    counts = [sum(1 for s in statuses.values() if s == k) for k in ("PASS", "FAIL", "SKIPPED")]
    if len(statuses) != total or counts != [passed, failed, skipped]:
        raise FocusValidatorError(
            f"the per-rule lines (pass/fail/skipped {counts}, {len(statuses)} rules) do not add up to "
            f"{summary.group(0)!r}: has the report format changed?"
        )
    failures: list[RuleFailure] = []
    lines = output[output.find("--- Failures ---") :].splitlines() if failed else []
    for i, line in enumerate(lines):
        if m := _FAILURE_RE.match(line):
            nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
            violations = int(m.group(2)) if m.group(2).strip().isdigit() else None
            must = nxt.removeprefix("MustSatisfy:").strip() if nxt.startswith("MustSatisfy:") else ""
            failures.append(RuleFailure(m.group(1), violations, m.group(3).strip(), must))
    listed = {f.rule_id for f in failures}
    failures += [
        RuleFailure(r, None, "(no reason printed)") for r, s in statuses.items() if s == "FAIL" and r not in listed
    ]
    return (total, passed, failed, skipped), summary.group(0).strip(), statuses, tuple(failures)


def validate(
    data_file: Path,
    version: str = "1.2",
    *,
    criteria: Sequence[str] | str | None = None,
    errata: bool = True,
    venv: Path | None = None,
    timeout: float = 600.0,
) -> Result:
    """Validate a FOCUS CSV / Parquet file (by suffix) offline; see the module docstring.

    ``criteria``: the validator's applicability criteria (which "provider supports X" rules apply), a list or
    "ALL"; None keeps the validator's default (no criteria: every conditional rule is skipped).
    """
    data = Path(data_file).resolve()
    if not data.is_file():
        raise FocusValidatorError(f"no data file {data}")
    venv = ensure_venv(venv or DEFAULT_VENV)
    site = _site_packages(venv)
    wanted = (criteria,) if isinstance(criteria, str) else tuple(criteria or ())
    with tempfile.TemporaryDirectory(prefix="focus-validator-") as tmp:
        logging_config = Path(tmp) / "logging.yaml"
        logging_config.write_text(_LOGGING_CONFIG)
        cmd = [str(venv / "bin" / "focus-validator"), "--data-file", str(data), "--validate-version", version]
        cmd += ["--block-download"]
        if wanted:
            cmd += ["--applicability-criteria", ",".join(wanted)]
        changed: tuple[str, ...] = ()
        if errata:
            bundled = site / "focus_validator" / "rules" / RULES_FILE
            if version != "1.2" or not bundled.is_file():
                raise FocusValidatorError(f"errata exist for FOCUS 1.2 ({RULES_FILE}) only; pass errata=False")
            changed = write_corrected_rules(bundled, Path(tmp))
            cmd += ["--rule-set-path", tmp]
        env = {**os.environ, "LOGGING_CONFIG": str(logging_config), "PYTHONIOENCODING": "utf-8"}
        env.pop("PYTHONPATH", None)
        started = time.monotonic()
        try:
            done = subprocess.run(cmd, cwd=site, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise FocusValidatorError(f"focus-validator timed out after {timeout:.0f} s on {data}") from None
        seconds = time.monotonic() - started
    if done.returncode != 0 or not _SUMMARY_RE.search(done.stdout):
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-20:])
        raise FocusValidatorError(f"focus-validator failed on {data} (exit {done.returncode}):\n{tail}")
    (total, passed, failed, skipped), line, statuses, failures = parse_report(done.stdout)
    return Result(
        total, passed, failed, skipped, failures, statuses, line, tuple(cmd), wanted, changed, seconds, done.stdout
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.focus_validator", description=__doc__.split("\n\n")[0])
    parser.add_argument("data_file", type=Path, help="FOCUS rows as .csv or .parquet")
    parser.add_argument("--version", default="1.2")
    parser.add_argument("--criteria", default=None, help="comma-separated applicability criteria, or ALL")
    parser.add_argument("--no-errata", action="store_true", help="validate against the bundled rules unchanged")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    criteria = [c for c in args.criteria.split(",") if c] if args.criteria else None
    try:
        result = validate(
            args.data_file, args.version, criteria=criteria, errata=not args.no_errata, timeout=args.timeout
        )
    except FocusValidatorError as exc:
        print(f"focus-validator: {exc}", file=sys.stderr)
        return 2
    print(result.describe(limit=200))
    print(f"({result.seconds:.1f} s; criteria: {','.join(result.criteria) or 'none'})")
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
