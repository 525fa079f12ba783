"""Trace-driven, deterministic simulator of an LLM inference fleet under an autoscaling policy.

    from autoscaler.sim import load_profile, load_workload, simulate
    from autoscaler.policy.registry import make_policy

    profile = load_profile("h100-llama-3.1-8b")
    workload = load_workload("azure-conv", profile=profile)      # scaled: peak needs 10 replicas
    result = simulate(workload, make_policy("warmscale", profile.to_capacity()), profile)
    print(result.attainment, result.gpu_hours)

Modules: `traces` (loading, validation, scaling, arrivals), `profile` (engine profiles),
`engine` (one replica), `simulator` (the fleet and control loop), `oracle` (clairvoyant lower
bound), `prewarm` (forecast hook), `results` (SLOs and metrics), `plot`, `cli`, `calibrate`.
"""
from autoscaler.sim.profile import EngineProfile, load_profile
from autoscaler.sim.results import PRIMARY_SLO, SLOS, SimResult, Slo
from autoscaler.sim.simulator import ModelSpec, SimConfig, Simulation, simulate
from autoscaler.sim.traces import TraceError, Workload, load_workload

__all__ = ["EngineProfile", "load_profile", "Slo", "SLOS", "PRIMARY_SLO", "SimResult", "ModelSpec", "SimConfig",
           "Simulation", "simulate", "TraceError", "Workload", "load_workload"]
