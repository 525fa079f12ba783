"""status.policyState survives the JSON merge patch that writes status: nulls included."""
from __future__ import annotations

import json

import pytest

from autoscaler.controller.status import decode_policy_state, encode_policy_state


def _merge_patch(target, patch):
    """RFC 7386, as the API server applies a merge patch to status."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


def test_a_snapshot_with_nulls_comes_back_whole_through_a_merge_patch():
    snapshot = {"policy": "warmscale", "version": 1,
                "models": {"m": {"first_t": 10.0, "idle_since": None, "panic_t": None, "rate": [[1.0, 2.0]]}}}
    status = _merge_patch({"policyState": {"encoding": "json", "data": "{}"}}, {"policyState": encode_policy_state(snapshot)})
    assert decode_policy_state(status["policyState"]) == snapshot
    # what a plain object would have become: the timers' keys deleted
    assert "idle_since" not in _merge_patch({}, {"s": snapshot})["s"]["models"]["m"]


def test_no_state_is_none():
    assert decode_policy_state(None) is None and decode_policy_state({}) is None


@pytest.mark.parametrize("stored, words", [
    ({"policy": "warmscale"}, "expected {encoding: json"),
    ({"encoding": "json", "data": "{not json"}, "not JSON"),
    ({"encoding": "json", "data": json.dumps([1])}, "JSON object"),
])
def test_an_unreadable_state_is_named(stored, words):
    with pytest.raises(ValueError, match=words):
        decode_policy_state(stored)
