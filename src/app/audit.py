"""The audit trail: one structured line per admin action and per change of an organization's keys,
credentials, billing source or notifications (and the runs and schedules changed over the API).

Each line is JSON in Cloud Logging's format on **stdout** — every other log line goes to stderr —
so on Cloud Run the trail is a log of its own (``run.googleapis.com/stdout``), labelled
``logging.googleapis.com/labels: {"log": "convergence.audit"}``. Fields: ``actor`` (``admin`` or the
calling key's id), ``action``, ``org_slug``, ``target``, ``outcome`` (``success`` | ``refused`` |
``failed``), ``error`` (the error code when not a success) and ``request_id``. Secrets never reach
it: targets are ids, and the line passes the same redaction filter as every other log line.

Refusals before the route runs (no key, another org's key, a missing scope, an invalid body) are
not audited here; the access log has them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from src.app.dependencies.auth import Identity
from src.app.logging_setup import org_slug_var
from src.core.errors import ServiceError

AUDIT_LOG = "convergence.audit"
log = logging.getLogger(AUDIT_LOG)


@dataclass(slots=True)
class AuditEntry:
    target: str | None = None


def actor(identity: Identity) -> str:
    return "admin" if identity.is_admin else str(identity.key_id)


def write(
    identity: Identity, action: str, *, org: str | None, target: str | None, outcome: str, error: str | None = None
) -> None:
    log.info(
        "audit",
        extra={
            "actor": actor(identity),
            "action": action,
            "org_slug": org,
            "target": target,
            "outcome": outcome,
            "error": error,
            "logging.googleapis.com/labels": {"log": AUDIT_LOG},
        },
    )


@asynccontextmanager
async def audited(
    identity: Identity, action: str, *, org: str | None = None, target: str | None = None
) -> AsyncIterator[AuditEntry]:
    """Write the action's audit line when the block ends, with its outcome (the block may set
    ``entry.target`` once it knows it, e.g. the id of a key it created)."""
    entry = AuditEntry(target)
    try:
        yield entry
    except ServiceError as exc:
        outcome = "refused" if exc.status_code < 500 else "failed"
        write(identity, action, org=org or org_slug_var.get(), target=entry.target, outcome=outcome, error=exc.code)
        raise
    except BaseException:
        write(identity, action, org=org or org_slug_var.get(), target=entry.target, outcome="failed", error="internal")
        raise
    write(identity, action, org=org or org_slug_var.get(), target=entry.target, outcome="success")
