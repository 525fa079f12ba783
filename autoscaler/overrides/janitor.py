"""Removes overrides past their expiry and records each removal in the audit trail.

Expiry never waits for the janitor: the resolver ignores an expired override at once. The janitor
only tidies, so it can run on any schedule, on the leader only, and catch up after a restart."""
from __future__ import annotations

import logging
from datetime import datetime

from autoscaler.overrides.errors import NotFound, OverrideError
from autoscaler.overrides.model import AuditEntry, utc
from autoscaler.overrides.store import AuditLog, OverrideStore

__all__ = ["JANITOR", "delete_expired"]

JANITOR = "system:warmscale:janitor"
log = logging.getLogger(__name__)


def delete_expired(store: OverrideStore, audit: AuditLog, now: datetime | float,
                   namespace: str | None = None) -> list[str]:
    """Delete every override whose expiry is at or before `now`; returns 'namespace/name' of each removed."""
    now = utc(now)
    removed = []
    for override in store.list(namespace):
        if override.expires_at > now:
            continue
        try:
            store.delete(override.namespace, override.name, uid=override.uid or None)
        except NotFound:
            continue   # someone else removed it first
        except OverrideError as err:
            log.warning("could not remove expired override %s/%s: %s", override.namespace, override.name, err)
            continue
        removed.append(f"{override.namespace}/{override.name}")
        try:
            audit.record(AuditEntry(time=now, actor=JANITOR, action="expire", namespace=override.namespace,
                                    override=override.name, target=override.target, previous=override.summary()))
        except OverrideError as err:
            log.warning("expired override %s/%s removed, audit not written: %s", override.namespace, override.name, err)
    return removed
