"""Per-run results: SLO attainment, latency percentiles, GPU-hours, scaling activity.

SLOs (the one definition used by the simulator, the CLI and the benchmark): a request meets an
SLO when it completed, its TTFT (arrival at the gateway -> first token) is at most `ttft_s` plus
the time its own prompt takes to prefill on an idle replica (`EngineProfile.idle_ttft_s`: ~50 ms
for a 1k-token prompt, ~4 s for 100k), and its mean TPOT ((last token - first token) /
(output tokens - 1); 0 for one-token outputs) is at most `tpot_s`. The prefill allowance keeps
the SLO attainable for every request the engine can serve at all, so attainment measures the
autoscaler rather than the prompt lengths.

A request is *unattainable* when no replica could meet the SLO even alone: longer than the model
or the KV cache takes (the engine rejects it), or with a mean decode step over `tpot_s` on an
idle replica. Attainment is the share of the *attainable* requests that meet the SLO (dropped
ones count as misses); the unattainable ones are counted apart (`unattainable`), and the misses
are also given as counts (`slo_misses`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["Slo", "SLOS", "PRIMARY_SLO", "WARMUP_S", "SimResult", "summarize", "idle_tpot_s"]


@dataclass(frozen=True)
class Slo:
    ttft_s: float
    tpot_s: float

    @property
    def key(self) -> str:
        return f"{self.ttft_s:g}s/{self.tpot_s * 1000:g}ms"


PRIMARY_SLO = Slo(2.0, 0.100)
SLOS = (PRIMARY_SLO, Slo(0.5, 0.050))
# Every run starts with no history: the first minutes judge how a policy starts cold as much as
# how it scales. Attainment over the requests that arrive after this is reported beside the total.
WARMUP_S = 300.0


@dataclass
class SimResult:
    policy: str
    trace: str
    model: str
    profile: str
    scale: float
    start_s: float
    end_s: float
    requests: int
    completed: int
    dropped: dict[str, int]
    slo_attainment: dict[str, float]
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    tpot_p50_s: float | None
    tpot_p99_s: float | None
    gpu_hours: float
    cold_start_waits: int
    scale_events: int
    scale_up_events: int
    scale_down_events: int
    idle_gpu_share: float
    preemptions: int
    peak_replicas: int
    mean_replicas: float
    decisions: dict[str, int]
    wall_s: float
    requests_per_wall_s: float
    notes: list[str] = field(default_factory=list)
    timeline: dict = field(default_factory=dict)
    attainment_after_warmup: float | None = None  # primary SLO over arrivals after start_s + WARMUP_S
    unattainable: int = 0                   # requests no replica could serve within the SLO (counted apart)
    slo_misses: dict[str, int] = field(default_factory=dict)   # attainable requests that missed, per SLO
    bound_gpu_hours: float | None = None   # the oracle's runs: the exact optimum's value (autoscaler.sim.oracle)
    # requests that arrived with no Ready replica of their model (the gateway held them): how many,
    # and their TTFT (arrival -> first token) over those completed
    held_requests: int = 0
    held_ttft_p50_s: float | None = None
    held_ttft_p99_s: float | None = None
    tier_starts: dict[str, int] = field(default_factory=dict)   # starts per cold-start tier (SimConfig.nodes only)

    @property
    def attainment(self) -> float:
        return self.slo_attainment[PRIMARY_SLO.key]

    def to_dict(self, timeline: bool = False) -> dict:
        d = asdict(self)
        if not timeline:
            d.pop("timeline")
        return d

    def to_json(self, timeline: bool = False) -> str:
        return json.dumps(self.to_dict(timeline), indent=2)


def _pct(x: np.ndarray, q: float) -> float | None:
    return float(np.percentile(x, q)) if x.size else None


def summarize(sim, m, wall_s: float) -> SimResult:
    w = m.spec.workload
    sl = slice(m.n0, m.n0 + m.n)
    first = sim.first[sl]
    done = sim.done[sl]
    dropped = sim.dropped[sl]
    ok = ~np.isnan(done) & (dropped == 0)
    ttft = first - w.arrival
    out = w.output
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (done - first) / np.maximum(out - 1, 1), 0.0)
    prefill_s = m.profile.idle_ttft_s(w.prompt)
    primary_ttft_ok = ok & (ttft <= PRIMARY_SLO.ttft_s + prefill_s + 1e-12)
    cold_start_waits = int((sim.cold[sl] | (sim.behind_scale_up[sl] & ~primary_ttft_ok)).sum())
    att, misses = {}, {}
    idle_tpot = idle_tpot_s(m.profile, w.prompt, out)
    too_long = w.prompt + out > min(m.profile.engine.max_model_len, m.profile.engine.kv_cache_tokens)
    after_warmup = w.arrival >= w.start_s + WARMUP_S
    warm_att = None
    for slo in SLOS:
        attainable = ~too_long & (idle_tpot <= slo.tpot_s + 1e-12)
        good = attainable & ok & (ttft <= slo.ttft_s + prefill_s + 1e-12) & (tpot <= slo.tpot_s + 1e-12)
        n_att = int(attainable.sum())
        att[slo.key] = float(good.sum() / max(1, n_att))
        misses[slo.key] = n_att - int(good.sum())
        if slo == PRIMARY_SLO:
            unattainable = m.n - n_att
            judged = after_warmup & attainable
            if judged.any():
                warm_att = float(good[judged].sum() / judged.sum())
    held = sim.cold[sl]
    held_ok = held & ok
    h = m.horizon or {"gpu_s": 0.0, "busy_s": 0.0, "preemptions": 0}
    gpu_s = h["gpu_s"]
    tl = m.timeline
    dur = max(1e-9, w.end_s - w.start_s)
    names = {1: "rejected_too_long", 2: "gateway_timeout", 3: "unfinished"}
    drop_counts = {names[k]: int((dropped == k).sum()) for k in names}
    policy_name = getattr(m.policy, "name", type(m.policy).__name__)
    return SimResult(
        policy=policy_name, trace=w.name, model=w.model, profile=m.profile.name, scale=float(w.scale),
        start_s=float(w.start_s), end_s=float(w.end_s), requests=int(m.n), completed=int(ok.sum()),
        dropped=drop_counts, slo_attainment=att,
        ttft_p50_s=_pct(ttft[ok], 50), ttft_p99_s=_pct(ttft[ok], 99),
        tpot_p50_s=_pct(tpot[ok], 50), tpot_p99_s=_pct(tpot[ok], 99),
        gpu_hours=gpu_s / 3600.0, cold_start_waits=cold_start_waits,
        scale_events=m.scale_up_events + m.scale_down_events, scale_up_events=m.scale_up_events,
        scale_down_events=m.scale_down_events,
        idle_gpu_share=float(1.0 - h["busy_s"] / gpu_s) if gpu_s > 0 else 0.0,
        preemptions=int(h["preemptions"]), peak_replicas=int(m.peak_replicas),
        mean_replicas=gpu_s / dur / m.profile.gpus_per_replica,
        decisions=dict(sorted(m.decisions.items())), wall_s=wall_s,
        requests_per_wall_s=sim.total / wall_s if wall_s > 0 else 0.0,
        notes=list(w.notes), timeline={k: list(v) for k, v in tl.items()}, attainment_after_warmup=warm_att,
        unattainable=int(unattainable), slo_misses=misses,
        held_requests=int(held.sum()), held_ttft_p50_s=_pct(ttft[held_ok], 50),
        held_ttft_p99_s=_pct(ttft[held_ok], 99), tier_starts=dict(sorted(m.tier_starts.items())),
    )


def idle_tpot_s(profile, prompt, output) -> np.ndarray:
    """Mean decode step of each request alone on an idle replica (its context half-way through decode)."""
    e = profile.engine
    ctx = np.asarray(prompt, dtype=np.float64) + np.asarray(output, dtype=np.float64) / 2
    return e.step_base_s + e.step_per_seq_s + e.step_per_kv_token_s * ctx
