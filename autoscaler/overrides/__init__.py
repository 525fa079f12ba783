"""Operators' overrides: the record, where it is stored (Kubernetes objects or SQLite), which are
in force at a given time, the checks on new ones, and the janitor that removes expired ones.

The controller, each tick:  store.active_specs(namespace, autoscaler, now) -> [contract.OverrideSpec]
"""
from autoscaler.overrides.errors import Conflict, FieldError, NotFound, OverrideError, Unavailable
from autoscaler.overrides.janitor import delete_expired
from autoscaler.overrides.model import AuditEntry, ScalingOverride, Schedule
from autoscaler.overrides.resolve import active_specs
from autoscaler.overrides.sqlite import SqliteAuditLog, SqliteOverrideStore
from autoscaler.overrides.store import AuditLog, OverrideStore


def __getattr__(name: str):
    # the Kubernetes backend imports the kubernetes client: loaded only when asked for
    if name in ("KubeOverrideStore", "KubeAuditLog"):
        from autoscaler.overrides import kube
        return getattr(kube, name)
    raise AttributeError(name)


__all__ = ["AuditEntry", "AuditLog", "Conflict", "FieldError", "KubeAuditLog", "KubeOverrideStore", "NotFound",
           "OverrideError", "OverrideStore", "ScalingOverride", "Schedule", "SqliteAuditLog",
           "SqliteOverrideStore", "Unavailable", "active_specs", "delete_expired"]
