"""A tiny random Llama in Hugging Face format, made on first use and cached by its recipe.

The demo (`warmscale demo`), the test ground and the benchmarks serve it with vLLM's CPU build:
hidden 256, 4 heads (head_dim 64: the CPU attention kernel rejects 16), 2 KV heads, 2 layers,
vocab 2048, bf16 safetensors, random weights from a fixed seed. Needs torch and transformers
(vLLM depends on both).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

# head_dim = 256 / 4 = 64: the CPU attention kernel rejects head_dim 16.
TINY_LLAMA = {
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "vocab_size": 2048,
    "max_position_embeddings": 2048,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
}
SEED = 1234


def recipe_key() -> str:
    return hashlib.sha256(json.dumps({**TINY_LLAMA, "seed": SEED}, sort_keys=True).encode()).hexdigest()[:12]


def make_tiny_llama(dest: Path) -> Path:
    """Write the model (config.json, generation_config.json, model.safetensors in bf16) to `dest`; idempotent."""
    if (dest / "model.safetensors").exists() and (dest / "config.json").exists():
        return dest
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    config = LlamaConfig(**TINY_LLAMA, torch_dtype="bfloat16")
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".tiny-llama-"))
    model.save_pretrained(staging, safe_serialization=True)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(staging, dest)
    return dest


def cache_dir() -> Path:
    """warmscale's cache ($WARMSCALE_CACHE, default ~/.cache/warmscale), shared with the test ground."""
    return Path(os.environ.get("WARMSCALE_CACHE", Path.home() / ".cache" / "warmscale"))


def cached_tiny_llama() -> Path:
    return make_tiny_llama(cache_dir() / "models" / f"tiny-llama-{recipe_key()}")
