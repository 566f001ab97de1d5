"""What an org API key may do. Every org route requires one scope; the admin key has them all.

Onboarding gives a new key the scopes listed in ``configs/setup/organizations/onboarding/config.yml``
(validated against this list); a rotated key gets the calling key's scopes or fewer (the admin's
rotation: all of them, unless it names fewer).
"""

from __future__ import annotations

from collections.abc import Iterable

ORG_READ = "org:read"  # the org's profile, usage, keys list, notification and credential settings, costs
ORG_WRITE = "org:write"  # change those settings, rotate keys
PIPELINES_RUN = "pipelines:run"  # start runs, create / change / delete schedules
PIPELINES_READ = "pipelines:read"  # read runs and schedules

ALL = (PIPELINES_RUN, PIPELINES_READ, ORG_READ, ORG_WRITE)


def unknown(scopes: Iterable[str]) -> list[str]:
    """The scopes in ``scopes`` this service does not define."""
    return sorted(set(scopes) - set(ALL))
