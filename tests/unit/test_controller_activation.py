"""A router's poke (status.activation) makes the controller decide for a model at zero at once,
and only a poke it has not seen before counts (the real API server is in tests/e2e/test_router.py)."""
from __future__ import annotations

from autoscaler.contract import Observation, Reason
from autoscaler.controller.activation import ACTIVATION_FRESH_S, Activations, with_activation
from autoscaler.controller.pods import FleetCount, PodIndex
from autoscaler.router.activation import activation_status
from tests.unit.test_controller_loop import _fake_api, _object, _spec

ZERO = FleetCount((), (), ())


def _poked(obj: dict, held: int, at: float) -> dict:
    return {**obj, "status": {"activation": activation_status(held, "router-0", at)}}


def _empty(time: float) -> Observation:
    return Observation("m", time, 0, 0, None, None, None, None, None, None)


def test_only_a_poke_not_seen_before_counts_and_what_a_list_shows_is_history():
    obj = _object(_spec())
    old, new = _poked(obj, 3, 1_000.0), _poked(obj, 2, 1_010.0)
    activations = Activations()
    activations.listed([old])
    assert not activations.seen(old, 2_000.0), "an activation already in status when listed is not a poke"
    assert activations.seen(new, 2_000.0)
    assert not activations.seen(new, 2_001.0), "the controller's own status writes repeat it: one poke"
    assert not activations.seen(obj, 2_002.0), "an object with no activation is no poke"
    taken = activations.take(("ns", "engine"), 2_000.5)
    assert taken is not None and taken.held == 2
    assert activations.take(("ns", "engine"), 2_000.6) is None, "a poke is used once"


def test_a_stale_poke_counts_for_nothing():
    activations = Activations()
    assert activations.seen(_poked(_object(_spec()), 1, 1_000.0), 5_000.0)
    assert activations.take(("ns", "engine"), 5_000.0 + ACTIVATION_FRESH_S + 1) is None


def test_the_poke_adds_its_held_requests_only_while_no_engine_can_count_them():
    activations = Activations()
    activations.seen(_poked(_object(_spec()), 4, 1.0), 10.0)
    activation = activations.take(("ns", "engine"), 10.0)
    assert with_activation(_empty(10.0), ZERO, activation).held_requests == 4.0
    loading = FleetCount((), ("pod",), ())  # type: ignore[arg-type]
    assert with_activation(_empty(10.0), loading, activation).held_requests is None
    assert with_activation(_empty(10.0), ZERO, None).held_requests is None


def test_a_poked_tick_activates_a_model_at_zero_and_an_unpoked_one_does_not(controller):
    scales, statuses = _fake_api(controller, replicas=0)
    spec = _spec(minReplicas=0, scaleToZero={"enabled": True})
    obj, index, now = _object(spec), PodIndex([]), 1_000_000.0

    def tick(t: float) -> None:
        rnd = controller._prepare(obj, index)
        controller._tick_guarded(rnd, controller._read_metrics([rnd], t)[rnd.key], [], t)

    tick(now)
    assert scales.writes == [], "no engine, no router metric, no poke: nothing to act on"
    assert controller.activations.seen(_poked(obj, 1, now), now + 1)
    tick(now + 1)
    assert scales.writes == [("engine", 1)]
    assert statuses[-1][1]["lastDecision"]["reason"] == Reason.ACTIVATE_FROM_ZERO.value


def test_a_poke_runs_the_tick_at_once(controller):
    ran = []
    controller.tick = lambda: ran.append(True)
    controller._scheduler.add_job(lambda: controller.tick(), "interval", seconds=3600, id="tick")
    controller._scheduler.start()
    try:
        controller.autoscalers._items = {}
        controller._autoscaler_changed(None)
        controller._autoscaler_changed(_poked(_object(_spec()), 1, 1.0))
        import time
        deadline = time.monotonic() + 5
        while not ran and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        controller._scheduler.shutdown(wait=False)
    assert ran, "the tick due in an hour ran at once"
    assert controller.metrics.activations._value.get() == 1


def test_a_poke_while_the_caches_fill_is_tried_again_shortly_not_at_the_next_tick(controller):
    from datetime import datetime, timezone

    controller.elector.is_leader = lambda: True
    controller._ready = lambda: False
    controller._scheduler.add_job(lambda: None, "interval", seconds=3600, id="tick")
    controller._scheduler.start(paused=True)
    try:
        import time
        assert controller.activations.seen(_poked(_object(_spec()), 1, 1.0), time.time())
        controller.tick()
        due = controller._scheduler.get_job("tick").next_run_time
    finally:
        controller._scheduler.shutdown(wait=False)
    assert (due - datetime.now(timezone.utc)).total_seconds() < 1.0


def test_a_poke_during_a_round_runs_the_models_once_more_at_once(controller):
    import time

    controller.elector.is_leader = lambda: True
    controller._ready = lambda: True
    rounds: list[float] = []

    def one_round(now: float) -> None:
        rounds.append(now)
        if len(rounds) == 1:   # the scheduler skips a poke while the tick runs: the tick itself must see it
            controller.activations.seen(_poked(_object(_spec()), 1, 1.0), time.time())

    controller._tick_models = one_round
    controller.tick()
    assert len(rounds) == 2
    controller.tick()
    assert len(rounds) == 3, "a poke already served does not run the models again"
