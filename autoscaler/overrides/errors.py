"""What can go wrong with an override, as the API reports it (status code chosen in the API)."""
from __future__ import annotations

from typing import Any

__all__ = ["OverrideError", "FieldError", "NotFound", "Conflict", "Unavailable"]


class OverrideError(Exception):
    def __init__(self, message: str, field: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.message, self.field, self.value = message, field, value


class FieldError(OverrideError):
    """Bad input: `field` names what is wrong, `value` what was given."""


class NotFound(OverrideError):
    pass


class Conflict(OverrideError):
    """The request clashes with what exists (a name taken, a pin already in force, a reused idempotency key)."""


class Unavailable(OverrideError):
    """The backing store (the Kubernetes API server, the SQLite file) cannot be reached; retry later."""

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
