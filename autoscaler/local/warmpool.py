"""The warm-pool plan for local mode: the cluster planner (forecasting/warmpool.py) with one node, this
machine; what is in its cache now is the current placement, and `stage` follows the plan there with
the same node agent the DaemonSet runs (loader/warmplan.py), without node labels."""
from __future__ import annotations

from autoscaler.local.config import LocalConfig
from forecasting.warmpool import WarmPoolConfig, WarmPoolModel, WarmPoolNode

NODE = "local"
IDLE_GRACE_DEFAULT_S = 300.0   # the warmscale policy's default idle_grace_s


def planner_config(cfg: LocalConfig) -> WarmPoolConfig:
    """One node with the pool's budgets and this machine's GPUs; the models listed under warm_pool."""
    pool = cfg.warm_pool
    if pool is None:
        raise ValueError("warm_pool: not set in the configuration (nothing to plan)")
    gpus = max((len(m.devices) for m in cfg.models if isinstance(m.devices, list)), default=1)
    models = []
    for m in cfg.models:
        entry = pool.models.get(m.name)
        if entry is None:
            continue
        models.append(WarmPoolModel(
            name=m.name, location=m.model, bytes=entry.bytes, saving_s=entry.saving_s,
            gpus_per_replica=m.gpus_per_engine, scale_to_zero=m.min_replicas == 0,
            idle_grace_s=float(m.policy.settings.get("idle_grace_s", IDLE_GRACE_DEFAULT_S))))
    node = WarmPoolNode(name=NODE, disk_bytes=pool.budget, memory_bytes=pool.memory_budget, gpus=max(1, gpus))
    return WarmPoolConfig(horizon_s=pool.horizon_s, stickiness=pool.stickiness, nodes=[node], models=models)


def staged_now(cfg: LocalConfig) -> dict[str, list[str]]:
    """The current placement: the warm_pool models whose checkpoint has an entry in the cache."""
    from loader.cache import WarmCache

    assert cfg.warm_pool is not None
    held = {loc.rstrip("/") for loc in WarmCache(cfg.warm_pool.cache_dir).locations()}
    return {NODE: [m.name for m in cfg.models if m.name in cfg.warm_pool.models and m.model.rstrip("/") in held]}
