"""The overrides stage: expiry, precedence, combination of ranges, conflict rule, explain."""
from __future__ import annotations

import pytest

from autoscaler.contract import Decision, DecisionExplain, OverrideKind, OverrideSpec, Reason, Signal
from autoscaler.policy.overrides import active_overrides, apply_overrides

NOW = 1000.0


def dec(current: int, desired: int, explain: DecisionExplain | None = None) -> Decision:
    return Decision(model="m", time=NOW, current=current, desired=desired, reason=Reason.SCALE_UP_STABLE,
                    signal=str(Signal.TOKEN_THROUGHPUT), detail="policy line", explain=explain)


def ov(name: str, kind: str, *, expires: float = NOW + 60, created: float = 0.0, **kw) -> OverrideSpec:
    return OverrideSpec(name=name, kind=OverrideKind(kind), expires_at=expires, reason="test", author="ops",
                        created_at=created, **kw)


def test_no_override_returns_the_decision_itself():
    d = dec(4, 6)
    assert apply_overrides(d, [], NOW) is d


def test_override_that_does_not_change_the_count_returns_the_decision_itself():
    d = dec(4, 6)
    assert apply_overrides(d, [ov("b", "bounds", min_replicas=2, max_replicas=8)], NOW) is d
    assert apply_overrides(d, [ov("p", "pin", replicas=6)], NOW) is d


def test_expired_override_is_ignored():
    d = dec(4, 6)
    assert apply_overrides(d, [ov("p", "pin", replicas=1, expires=NOW)], NOW) is d
    assert apply_overrides(d, [ov("p", "pin", replicas=1, expires=NOW - 1)], NOW) is d
    assert apply_overrides(d, [ov("p", "pin", replicas=1, expires=NOW + 0.001)], NOW).desired == 1


def test_pin_sets_the_count_and_explains_itself():
    d = dec(4, 6, DecisionExplain(need={"kv_tokens": 5.5}, raw_desired=6, limits=("rate_limited_up",)))
    out = apply_overrides(d, [ov("freeze", "pin", replicas=2)], NOW)
    assert (out.desired, out.reason, out.signal) == (2, Reason.OVERRIDE_PIN, "override")
    assert out.explain.override == "freeze"
    assert out.explain.limits == ("rate_limited_up", "override_pin")
    assert out.explain.need == {"kv_tokens": 5.5} and out.explain.raw_desired == 6
    assert (out.model, out.time, out.current) == (d.model, d.time, d.current)


def test_explain_is_created_when_the_policy_gave_none():
    out = apply_overrides(dec(4, 6), [ov("stop", "pause")], NOW)
    assert out.explain == DecisionExplain(limits=("override_pause",), override="stop")


def test_pin_beats_every_other_kind():
    ovs = [ov("pause", "pause"), ov("bounds", "bounds", min_replicas=5, max_replicas=9),
           ov("warm", "prewarm", replicas=8), ov("pin", "pin", replicas=0)]
    out = apply_overrides(dec(4, 6), ovs, NOW)
    assert (out.desired, out.reason, out.explain.override) == (0, Reason.OVERRIDE_PIN, "pin")


def test_newest_pin_wins():
    ovs = [ov("old", "pin", replicas=3, created=10), ov("new", "pin", replicas=7, created=20)]
    out = apply_overrides(dec(4, 6), ovs, NOW)
    assert (out.desired, out.explain.override) == (7, "new")


def test_pause_holds_the_current_count_both_ways():
    assert apply_overrides(dec(4, 9), [ov("p", "pause")], NOW).desired == 4
    out = apply_overrides(dec(4, 1), [ov("p", "pause")], NOW)
    assert (out.desired, out.reason, out.explain.limits) == (4, Reason.OVERRIDE_PAUSE, ("override_pause",))


def test_pause_up_stops_growth_only():
    out = apply_overrides(dec(4, 9), [ov("nu", "pause_up")], NOW)
    assert (out.desired, out.reason, out.explain.limits) == (4, Reason.OVERRIDE_PAUSE, ("override_pause_up",))
    d = dec(4, 2)
    assert apply_overrides(d, [ov("nu", "pause_up")], NOW) is d


def test_pause_down_stops_shrinking_only():
    out = apply_overrides(dec(4, 2), [ov("nd", "pause_down")], NOW)
    assert (out.desired, out.explain.limits) == (4, ("override_pause_down",))
    d = dec(4, 9)
    assert apply_overrides(d, [ov("nd", "pause_down")], NOW) is d


def test_pause_up_and_pause_down_together_hold():
    both = [ov("nu", "pause_up"), ov("nd", "pause_down")]
    assert apply_overrides(dec(4, 9), both, NOW).desired == 4
    assert apply_overrides(dec(4, 1), both, NOW).desired == 4


def test_bounds_clamp_either_side_and_open_sides():
    out = apply_overrides(dec(4, 12), [ov("b", "bounds", min_replicas=2, max_replicas=8)], NOW)
    assert (out.desired, out.reason, out.explain.limits) == (8, Reason.OVERRIDE_BOUNDS, ("override_bounds",))
    assert apply_overrides(dec(4, 1), [ov("b", "bounds", min_replicas=2, max_replicas=8)], NOW).desired == 2
    assert apply_overrides(dec(4, 1), [ov("b", "bounds", min_replicas=3)], NOW).desired == 3
    d = dec(4, 50)
    assert apply_overrides(d, [ov("b", "bounds", min_replicas=3)], NOW) is d


def test_two_bounds_intersect():
    ovs = [ov("wide", "bounds", min_replicas=2, max_replicas=10), ov("narrow", "bounds", min_replicas=5, max_replicas=7)]
    up = apply_overrides(dec(4, 9), ovs, NOW)
    assert (up.desired, up.explain.override) == (7, "narrow")
    down = apply_overrides(dec(4, 1), ovs, NOW)
    assert (down.desired, down.explain.override) == (5, "narrow")


def test_prewarm_raises_to_its_replicas_and_the_largest_prewarm_counts():
    out = apply_overrides(dec(4, 2), [ov("a", "prewarm", replicas=5), ov("b", "prewarm", replicas=7)], NOW)
    assert (out.desired, out.reason, out.explain.override) == (7, Reason.OVERRIDE_PREWARM, "b")
    d = dec(4, 9)
    assert apply_overrides(d, [ov("a", "prewarm", replicas=5)], NOW) is d


def test_bounds_and_prewarm_that_agree_are_both_met():
    ovs = [ov("b", "bounds", min_replicas=2, max_replicas=8), ov("w", "prewarm", replicas=5)]
    assert apply_overrides(dec(4, 1), ovs, NOW).desired == 5      # prewarm inside the bounds
    assert apply_overrides(dec(4, 12), ovs, NOW).desired == 8     # bounds cap
    assert apply_overrides(dec(4, 6), ovs, NOW).desired == 6      # both met already


def test_conflict_higher_precedence_wins_as_far_as_it_allows():
    # prewarm 10 against bounds max 6: bounds outrank prewarm, so the count goes as high as allowed
    ovs = [ov("w", "prewarm", replicas=10), ov("b", "bounds", max_replicas=6)]
    out = apply_overrides(dec(4, 2), ovs, NOW)
    assert (out.desired, out.explain.override, out.reason) == (6, "w", Reason.OVERRIDE_PREWARM)
    out = apply_overrides(dec(4, 9), ovs, NOW)
    assert (out.desired, out.explain.override, out.reason) == (6, "b", Reason.OVERRIDE_BOUNDS)


def test_conflict_pause_outranks_bounds():
    ovs = [ov("b", "bounds", min_replicas=10), ov("hold", "pause")]
    out = apply_overrides(dec(4, 2), ovs, NOW)
    assert (out.desired, out.explain.override) == (4, "hold")
    out = apply_overrides(dec(4, 12), ovs, NOW)
    assert (out.desired, out.explain.override) == (4, "hold")


def test_conflict_pause_up_outranks_prewarm():
    ovs = [ov("w", "prewarm", replicas=8), ov("nu", "pause_up")]
    out = apply_overrides(dec(4, 2), ovs, NOW)
    assert (out.desired, out.explain.override) == (4, "w")   # raised by the prewarm, capped by pause_up
    assert apply_overrides(dec(4, 9), ovs, NOW).desired == 4


def test_conflicting_bounds_newest_wins():
    ovs = [ov("old", "bounds", max_replicas=3, created=1), ov("new", "bounds", min_replicas=6, created=2)]
    out = apply_overrides(dec(4, 2), ovs, NOW)
    assert (out.desired, out.explain.override) == (6, "new")
    assert apply_overrides(dec(4, 9), ovs, NOW).desired == 6


def test_active_overrides_orders_by_precedence_then_newest():
    ovs = [ov("w", "prewarm", replicas=1), ov("b", "bounds", max_replicas=3),
           ov("nd", "pause_down", created=1), ov("nu", "pause_up", created=2), ov("p", "pause"),
           ov("pin1", "pin", replicas=1, created=1), ov("pin2", "pin", replicas=1, created=5),
           ov("gone", "pin", replicas=1, expires=NOW - 5)]
    assert [o.name for o in active_overrides(ovs, NOW)] == ["pin2", "pin1", "p", "nu", "nd", "b", "w"]


@pytest.mark.parametrize("bad, words", [
    (dict(kind="pin"), "replicas"),
    (dict(kind="prewarm", replicas=-1), "replicas"),
    (dict(kind="bounds"), "min_replicas"),
    (dict(kind="bounds", min_replicas=5, max_replicas=2), "min_replicas (5)"),
    (dict(kind="bounds", max_replicas=-2), "max_replicas"),
])
def test_invalid_override_names_itself_and_the_field(bad, words):
    kind = bad.pop("kind")
    with pytest.raises(ValueError) as e:
        apply_overrides(dec(4, 6), [ov("broken", kind, **bad)], NOW)
    assert "'broken'" in str(e.value) and words in str(e.value)


def test_detail_keeps_the_policy_line():
    out = apply_overrides(dec(4, 6), [ov("freeze", "pin", replicas=2)], NOW)
    assert out.detail.endswith("policy line") and "freeze" in out.detail
