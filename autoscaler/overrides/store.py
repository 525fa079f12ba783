"""Where overrides and their audit trail live: the protocols both backends (Kubernetes, SQLite) meet."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from autoscaler.contract import OverrideSpec
from autoscaler.overrides.model import AuditEntry, ScalingOverride
from autoscaler.overrides.resolve import active_specs

__all__ = ["OverrideStore", "AuditLog", "ActiveSpecsMixin"]


@runtime_checkable
class OverrideStore(Protocol):
    def list(self, namespace: str | None = None, target: str | None = None) -> list[ScalingOverride]:
        """Every override (expired ones too until the janitor removes them); None = all namespaces / targets."""

    def get(self, namespace: str, name: str) -> ScalingOverride:
        """Raises NotFound."""

    def create(self, override: ScalingOverride, idempotency_key: str | None = None,
               body_hash: str | None = None) -> ScalingOverride:
        """Write a new override; returns it as stored (uid, created_at). Raises Conflict if the name is taken."""

    def find_idempotent(self, namespace: str, idempotency_key: str,
                        fresh: bool = False) -> tuple[ScalingOverride, str] | None:
        """The override an earlier create with this key made, and the hash of that request's body.
        `fresh`: read the backing store itself, not a cache of it (after a create clashed)."""

    def delete(self, namespace: str, name: str, uid: str | None = None) -> None:
        """Remove it (only if its uid is still `uid`, when given). Raises NotFound."""

    def active_specs(self, namespace: str, target: str, now: datetime | float) -> list[OverrideSpec]:
        """What the controller calls each tick: the overrides of one autoscaler in force at `now`."""

    # Optional: `version()` returns, without blocking, a token that changes whenever what list() and
    # get() return may have changed, or None when it cannot tell now. The API keeps encoded responses
    # keyed by it; a store without it is read on every request.


@runtime_checkable
class AuditLog(Protocol):
    def record(self, entry: AuditEntry) -> AuditEntry:
        """Write durably; returns the entry with its id."""

    def remove(self, entry_id: str) -> None:
        """Take back an entry whose change could not be made (nothing half-written)."""

    def query(self, namespace: str | None = None, target: str | None = None, override: str | None = None,
              limit: int = 100, continue_token: str | None = None) -> tuple[list[AuditEntry], str | None]:
        """Newest first; returns the page and the token for the next one (None at the end).
        Raises FieldError('continue') for a token it did not issue."""


class ActiveSpecsMixin:
    def active_specs(self, namespace: str, target: str, now: datetime | float) -> list[OverrideSpec]:
        return active_specs(self.list(namespace, target), now)  # type: ignore[attr-defined]


def sort_key(override: ScalingOverride) -> tuple[str, str]:
    return override.namespace, override.name


def sorted_overrides(overrides: Sequence[ScalingOverride]) -> list[ScalingOverride]:
    return sorted(overrides, key=sort_key)
