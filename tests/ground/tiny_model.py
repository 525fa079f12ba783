"""The tiny random Llama of the test ground: the product's maker (autoscaler/local/tiny_model.py)."""
from autoscaler.local.tiny_model import SEED, TINY_LLAMA, cached_tiny_llama, make_tiny_llama, recipe_key

__all__ = ["SEED", "TINY_LLAMA", "cached_tiny_llama", "make_tiny_llama", "recipe_key"]
