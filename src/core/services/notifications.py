"""Per-organization notification preferences, and the notifications they send after each run.

Preferences live in ``org_profiles`` (``notify_emails``, ``notify_slack_webhook_encrypted``,
``notify_on``). The Slack webhook URL is a secret: checked (``notify/webhook_url.py``), encrypted
with the KMS backend bound to the org (purpose ``slack_webhook``), shown back only masked, never
logged. After a run ends COMPLETED ("success") or FAILED ("failure"), ``RunNotifier`` sends to the
org's e-mails and webhook if that outcome is in ``notify_on`` — in the background, after the run's
final state is written, so it never changes the run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from src.core.engine.repositories.notifications import NotificationRepository
from src.core.errors import NotFoundError
from src.core.notify.defaults import effective
from src.core.notify.delivery import Delivery, log_delivery
from src.core.notify.email import EmailConfig, send_email
from src.core.notify.slack import SlackConfig, send_slack
from src.core.notify.templates import run_values
from src.core.notify.webhook_url import mask_webhook_url, resolve_checked
from src.core.security.kms import DecryptionError, decrypt_text, encrypt_text

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from src.core.run_types import RunInfo, RunState
    from src.core.services.container import Services

log = logging.getLogger(__name__)

WEBHOOK_PURPOSE = "slack_webhook"
EVENTS = ("failure", "success")
_EVENT_OF_STATUS = {"FAILED": "failure", "COMPLETED": "success"}
EMAIL_PROCESSOR = "notify_systems.email_notification"
SLACK_PROCESSOR = "notify_systems.slack_notification"


def _repo(services: Services) -> NotificationRepository:
    return NotificationRepository(services.warehouse, services.catalog)


async def _profile(services: Services, org_slug: str) -> dict[str, Any]:
    row = await _repo(services).get(org_slug)
    if row is None:
        raise NotFoundError(f"organization {org_slug!r} not found", code="org_not_found")
    return row


async def _decrypt(services: Services, org_slug: str, blob: str) -> str:
    return await decrypt_text(services.kms, blob, org_slug=org_slug, purpose=WEBHOOK_PURPOSE)


def _view(org_slug: str, emails: Sequence[str], on: Sequence[str], masked: str | None, stored: bool) -> dict[str, Any]:
    return {
        "org_slug": org_slug,
        "emails": list(emails),
        "on": [e for e in EVENTS if e in on],
        "slack_webhook_configured": stored,
        "slack_webhook_url_masked": masked,
    }


async def get_preferences(services: Services, org_slug: str) -> dict[str, Any]:
    row = await _profile(services, org_slug)
    blob = row.get("notify_slack_webhook_encrypted")
    masked = None
    if blob:
        try:
            masked = mask_webhook_url(await _decrypt(services, org_slug, blob))
        except DecryptionError:
            masked = "(stored webhook cannot be decrypted: set it again)"
    return _view(org_slug, row.get("notify_emails") or [], row.get("notify_on") or [], masked, bool(blob))


async def set_preferences(
    services: Services,
    org_slug: str,
    *,
    emails: Sequence[str],
    on: Sequence[str],
    webhook_url: str | None,
    keep_webhook: bool,
) -> dict[str, Any]:
    """Replace the preferences. ``keep_webhook``: the request did not mention the webhook (it is
    write-only, so a client cannot send it back); ``webhook_url=None`` otherwise removes it."""
    row = await _profile(services, org_slug)
    if keep_webhook:
        blob = row.get("notify_slack_webhook_encrypted")
    elif webhook_url:
        await resolve_checked(webhook_url, allow_loopback=services.settings.is_local)
        blob = await encrypt_text(services.kms, webhook_url, org_slug=org_slug, purpose=WEBHOOK_PURPOSE)
    else:
        blob = None
    await _repo(services).save(org_slug, emails=emails, webhook_encrypted=blob, on=on)
    log.info(
        "notification preferences saved",
        extra={"emails": len(emails), "on": list(on), "slack_webhook_configured": bool(blob)},
    )
    return await get_preferences(services, org_slug)


async def org_webhook_url(services: Services, org_slug: str) -> str | None:
    """The org's Slack webhook in clear, for sending only."""
    row = await _repo(services).get(org_slug)
    blob = row.get("notify_slack_webhook_encrypted") if row else None
    return await _decrypt(services, org_slug, blob) if blob else None


class RunNotifier:
    """Sends an org's own notifications after its runs, in background tasks of this process."""

    def __init__(self, services: Services) -> None:
        self._s = services
        self._tasks: set[asyncio.Task[None]] = set()

    def after_run(self, run: RunInfo, variables: dict[str, Any], state: RunState) -> None:
        event = _EVENT_OF_STATUS.get(state.status)
        if event is None or run.org_slug is None or not run.record:
            return
        task = asyncio.create_task(self._notify(run, variables, state, event), name=f"notify-{run.pipeline_logging_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify(self, run: RunInfo, variables: dict[str, Any], state: RunState, event: str) -> None:
        org_slug = run.org_slug or ""
        try:
            row = await _repo(self._s).get(org_slug)
            if row is None or event not in (row.get("notify_on") or []):
                return
            values = run_values(settings=self._s.settings, run=run, state=state, variables=variables)
            sends: list[Coroutine[Any, Any, Delivery]] = []
            configs_dir = self._s.settings.configs_dir
            emails = list(row.get("notify_emails") or [])
            if emails:
                config = effective(EmailConfig, configs_dir, EMAIL_PROCESSOR)
                sends.append(send_email(self._s.settings, config, emails, values))
            blob = row.get("notify_slack_webhook_encrypted")
            if blob:
                url = await _decrypt(self._s, org_slug, blob)
                slack = effective(SlackConfig, configs_dir, SLACK_PROCESSOR)
                sends.append(send_slack(self._s.settings, slack, url, values, source="org"))
            for delivery in await asyncio.gather(*sends):
                log_delivery(log, delivery, org_slug=org_slug, run_id=run.pipeline_logging_id, via=f"org:{event}")
        except asyncio.CancelledError:
            log.warning(
                "organization notifications cancelled (shutdown)",
                extra={"org_slug": org_slug, "pipeline_logging_id": run.pipeline_logging_id},
            )
            raise
        except Exception:
            log.exception(
                "organization notifications failed",
                extra={"org_slug": org_slug, "pipeline_logging_id": run.pipeline_logging_id},
            )

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
