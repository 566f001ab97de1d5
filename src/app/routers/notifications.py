"""An organization's own notification preferences (admin key or the org's key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from src.app.audit import audited
from src.app.dependencies.auth import OrgRead, OrgWrite
from src.app.schemas.common import BODY, ORG, errors
from src.app.schemas.notifications import NotificationPreferencesRequest, NotificationPreferencesResponse
from src.core.services.notifications import get_preferences, set_preferences

router = APIRouter(prefix="/api/v1/organizations", tags=["notifications"])


@router.get("/{org_slug}/notifications", response_model=NotificationPreferencesResponse, responses=errors(*ORG))
async def get_notifications(org: OrgRead) -> dict[str, Any]:
    """E-mails, outcomes that notify, and whether a Slack webhook is set (masked, never in clear)."""
    return await get_preferences(org.services, org.slug)


@router.put("/{org_slug}/notifications", response_model=NotificationPreferencesResponse, responses=errors(*ORG, *BODY))
async def put_notifications(org: OrgWrite, body: NotificationPreferencesRequest) -> dict[str, Any]:
    """Replace the org's notification preferences, applied to all its runs (in addition to the
    pipelines' own notification steps). ``slack_webhook_url`` omitted = keep, null = remove."""
    keep_webhook = "slack_webhook_url" not in body.model_fields_set
    change = "kept" if keep_webhook else ("removed" if body.slack_webhook_url is None else "set")
    async with audited(org.identity, "notifications.set", org=org.slug, target=f"slack_webhook {change}"):
        return await set_preferences(
            org.services,
            org.slug,
            emails=[str(e) for e in body.emails],
            on=list(body.on),
            webhook_url=body.slack_webhook_url,
            keep_webhook=keep_webhook,
        )
