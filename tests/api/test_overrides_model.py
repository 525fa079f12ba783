"""The override record, schedules and which overrides are in force (pure: no store, no server)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from autoscaler.contract import Decision, OverrideKind, Reason
from autoscaler.overrides import ScalingOverride, Schedule, active_specs
from autoscaler.overrides.errors import Conflict, FieldError
from autoscaler.overrides.kube import from_object, specs_from_objects, to_object
from autoscaler.overrides.model import parse_duration
from autoscaler.overrides.schedule import open_window
from autoscaler.overrides.validate import check_bounds, check_conflicts, check_expiry, check_fields
from autoscaler.policy.overrides import apply_overrides

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)


def override(**changes) -> ScalingOverride:
    values = dict(namespace="default", name="launch", target="llama", kind=OverrideKind.PIN, replicas=4,
                  expires_at=T0 + timedelta(hours=2), reason="launch", author="alice", created_at=T0)
    values.update(changes)
    return ScalingOverride(**values)


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("2h", 7200), ("1h30m", 5400), ("7d", 604800)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2", "2x", "h2", "-1h", "99999999d"])
def test_bad_durations_say_what_is_wrong(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_expired_override_is_not_in_force():
    ov = override()
    assert [s.name for s in active_specs([ov], T0 + timedelta(hours=1, minutes=59))] == ["launch"]
    assert active_specs([ov], T0 + timedelta(hours=2)) == []


def test_schedule_window_in_its_time_zone():
    # 09:00 in Paris is 08:00 UTC in December
    sched = Schedule(cron="0 9 * * *", time_zone="Europe/Paris", duration_s=3600)
    assert open_window(sched, T0 - timedelta(seconds=1)) is None
    assert open_window(sched, T0) == (T0, T0 + timedelta(hours=1))
    assert open_window(sched, T0 + timedelta(minutes=59)) == (T0, T0 + timedelta(hours=1))
    assert open_window(sched, T0 + timedelta(hours=1)) is None


def test_scheduled_override_is_in_force_only_inside_its_window_and_ends_with_it():
    ov = override(kind=OverrideKind.PREWARM, replicas=6, expires_at=T0 + timedelta(days=3),
                  schedule=Schedule(cron="0 8 * * *", duration_s=1800))
    assert active_specs([ov], T0 - timedelta(minutes=1)) == []
    inside = active_specs([ov], T0 + timedelta(minutes=10))
    assert len(inside) == 1 and inside[0].expires_at == (T0 + timedelta(minutes=30)).timestamp()
    assert active_specs([ov], T0 + timedelta(minutes=30)) == []
    assert len(active_specs([ov], T0 + timedelta(days=1, minutes=5))) == 1   # the next day's window


def test_overlapping_windows_merge():
    sched = Schedule(cron="*/5 * * * *", duration_s=600)
    assert open_window(sched, T0 + timedelta(minutes=7)) == (T0, T0 + timedelta(minutes=15))


def test_resolved_specs_drive_the_policy_overrides_stage():
    pin = override()
    decision = Decision(model="llama", time=T0.timestamp(), current=2, desired=7, reason=Reason.SCALE_UP_STABLE,
                        signal="queue")
    out = apply_overrides(decision, active_specs([pin], T0), T0.timestamp())
    assert (out.desired, out.reason, out.explain.override) == (4, Reason.OVERRIDE_PIN, "launch")
    later = T0 + timedelta(hours=2)
    assert apply_overrides(decision, active_specs([pin], later), later.timestamp()).desired == 7


def test_kubernetes_object_round_trip_and_kubectl_duration():
    ov = override(schedule=Schedule(cron="0 9 * * 1-5", time_zone="Europe/Paris", duration_s=8 * 3600))
    obj = to_object(ov)
    obj["metadata"].update(creationTimestamp="2026-12-01T08:00:00Z", uid="u1")
    back = from_object(obj)
    assert back.model_dump(exclude={"uid"}) == ov.model_dump(exclude={"uid"})
    # written with kubectl: a duration from creation, no author -> the field manager
    obj["spec"].pop("expiresAt")
    obj["spec"].pop("author")
    obj["spec"]["duration"] = "30m"
    obj["metadata"]["managedFields"] = [{"manager": "kubectl-client-side-apply"}]
    back = from_object(obj)
    assert back.expires_at == T0 + timedelta(minutes=30)
    assert back.author == "field manager kubectl-client-side-apply"


def test_specs_from_watched_objects_filter_target_and_namespace():
    objs = []
    for ns, target, name in (("default", "llama", "a"), ("default", "qwen", "b"), ("other", "llama", "c")):
        obj = to_object(override(namespace=ns, target=target, name=name))
        obj["metadata"]["creationTimestamp"] = "2026-12-01T08:00:00Z"
        objs.append(obj)
    objs.append({"metadata": {"namespace": "default", "name": "broken"}, "spec": {"target": "llama", "kind": "x"}})
    assert [s.name for s in specs_from_objects(objs, "default", "llama", T0.timestamp())] == ["a"]


@pytest.mark.parametrize("changes, field", [
    (dict(replicas=None), "replicas"),
    (dict(kind=OverrideKind.PAUSE), "replicas"),
    (dict(kind=OverrideKind.BOUNDS, replicas=None), "min_replicas"),
    (dict(kind=OverrideKind.BOUNDS, replicas=None, min_replicas=5, max_replicas=2), "min_replicas"),
    (dict(schedule=Schedule(cron="61 * * * *", duration_s=60)), "schedule.cron"),
    (dict(schedule=Schedule(cron="* * *", duration_s=60)), "schedule.cron"),
    (dict(schedule=Schedule(cron="0 9 * * *", time_zone="Mars/Olympus", duration_s=60)), "schedule.time_zone"),
])
def test_field_checks_name_the_field(changes, field):
    with pytest.raises(FieldError) as err:
        check_fields(override(**changes))
    assert err.value.field == field


def test_bounds_and_expiry_checks():
    with pytest.raises(FieldError) as err:
        check_bounds(override(replicas=11), 1, 10)
    assert (err.value.field, err.value.value) == ("replicas", 11)
    with pytest.raises(FieldError, match="not in the future") as err:
        check_expiry(override(expires_at=T0 - timedelta(seconds=1)), T0)
    assert err.value.field == "expires_at"
    with pytest.raises(FieldError, match="maximum"):
        check_expiry(override(expires_at=T0 + timedelta(days=31)), T0, max_ttl_s=30 * 86400)
    check_expiry(override(), T0)


def test_second_pin_is_rejected_and_other_clashes_say_who_wins():
    pin = override()
    with pytest.raises(Conflict, match="already pinned") as err:
        check_conflicts(override(name="second"), [pin], T0)
    assert err.value.field == "kind"
    warnings = check_conflicts(override(name="p", kind=OverrideKind.PAUSE, replicas=None), [pin], T0)
    assert warnings and "wins" in warnings[0] and "launch" in warnings[0]
    # an expired pin clashes with nothing
    assert check_conflicts(override(name="second"), [pin], T0 + timedelta(hours=3)) == []
