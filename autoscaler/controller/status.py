"""Status of a ModelAutoscaler: conditions and decision records, as the CRD's status schema has them."""
from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from autoscaler.contract import Decision, Reason
from autoscaler.controller.crd import RECENT_DECISIONS

__all__ = ["Condition", "rfc3339", "decision_record", "merge_conditions", "push_recent", "encode_policy_state",
           "decode_policy_state"]

_BOUNDED = {Reason.BOUNDED_MAX.value, Reason.BOUNDED_MIN.value}


def rfc3339(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: bool | None       # None = Unknown
    reason: str
    message: str = ""

    def as_dict(self, now: float, generation: int, previous: dict | None) -> dict[str, Any]:
        status = "Unknown" if self.status is None else ("True" if self.status else "False")
        changed = previous is None or previous.get("status") != status
        return {"type": self.type, "status": status, "reason": self.reason, "message": self.message[:1024],
                "lastTransitionTime": rfc3339(now) if changed else previous.get("lastTransitionTime", rfc3339(now)),
                "observedGeneration": generation}


def merge_conditions(old: list[dict] | None, new: list[Condition], now: float, generation: int) -> list[dict]:
    """New conditions, keeping each one's lastTransitionTime while its status does not change."""
    previous = {c.get("type"): c for c in old or []}
    return [c.as_dict(now, generation, previous.get(c.type)) for c in new]


def decision_record(decision: Decision, wall_time: float) -> dict[str, Any]:
    return {"time": rfc3339(wall_time), "current": decision.current, "desired": decision.desired,
            "reason": str(decision.reason), "signal": str(decision.signal), "detail": decision.detail[:512],
            "explain": decision.explain.to_dict() if decision.explain else {}}


def push_recent(recent: list[dict], record: dict) -> list[dict]:
    """Newest first, at most RECENT_DECISIONS; a record with the same count and reason as the newest is not added."""
    if recent and recent[0].get("desired") == record["desired"] and recent[0].get("reason") == record["reason"]:
        return recent
    return [record, *recent][:RECENT_DECISIONS]


def scaling_limited(decision: Decision, limited_message: str | None, held_at: int | None) -> Condition:
    if limited_message:
        extra = f"; held at {held_at} replicas instead of {decision.desired}" if held_at is not None else ""
        return Condition("ScalingLimited", True, "Unschedulable", limited_message + extra)
    if str(decision.reason) in _BOUNDED:
        return Condition("ScalingLimited", True, "BoundedByReplicaLimits", decision.detail)
    return Condition("ScalingLimited", False, "WithinLimits", "")


def encode_policy_state(snapshot: dict[str, Any]) -> dict[str, str]:
    """The policy's snapshot as status.policyState. Status is written by JSON merge patch, in which a
    null deletes its key, and a snapshot holds nulls (a timer not started): so the snapshot travels
    as JSON text."""
    return {"encoding": "json", "data": json.dumps(snapshot, allow_nan=False, separators=(",", ":"))}


def decode_policy_state(stored: Any) -> dict[str, Any] | None:
    """status.policyState back to the policy's snapshot; None when there is none. Raises ValueError
    naming what is wrong when it cannot be read."""
    if not stored:
        return None
    if not isinstance(stored, dict) or stored.get("encoding") != "json" or not isinstance(stored.get("data"), str):
        raise ValueError("status.policyState: expected {encoding: json, data: <JSON text>}")
    try:
        snapshot = json.loads(stored["data"])
    except ValueError as exc:
        raise ValueError(f"status.policyState.data is not JSON: {exc}") from exc
    if not isinstance(snapshot, dict):
        raise ValueError("status.policyState.data must hold a JSON object")
    return snapshot


def encode_forecast_history(history: dict[str, Any]) -> dict[str, str]:
    """A forecaster's history (ForecastPrewarmer.history) as status.forecastHistory: rates to 6
    significant digits, as compressed JSON (about 10 KB for the ~1,300 windows a forecaster keeps)."""
    rounded = {k: [None if v is None else float(f"{v:.6g}") for v in vs] if isinstance(vs, list) else vs
               for k, vs in history.items()}
    text = json.dumps(rounded, allow_nan=False, separators=(",", ":"))
    return {"encoding": "json+zlib+base64", "data": base64.b64encode(zlib.compress(text.encode(), 9)).decode()}


def decode_forecast_history(stored: Any) -> dict[str, Any] | None:
    """status.forecastHistory back to the history; None when there is none. Raises ValueError naming
    what is wrong when it cannot be read."""
    if not stored:
        return None
    if not isinstance(stored, dict) or stored.get("encoding") != "json+zlib+base64" or not isinstance(stored.get("data"), str):
        raise ValueError("status.forecastHistory: expected {encoding: json+zlib+base64, data: <text>}")
    try:
        history = json.loads(zlib.decompress(base64.b64decode(stored["data"], validate=True)))
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"status.forecastHistory.data cannot be read: {exc}") from exc
    if not isinstance(history, dict):
        raise ValueError("status.forecastHistory.data must hold a JSON object")
    return history
