"""GPU nodes with state, for cold-start tiers in the simulator.

Without a `NodeFleet` (`SimConfig.nodes is None`) the simulator has no nodes: every start takes the
profile's one cold-start number (`ColdStart.total_s`), as it always has. With one, every node has
GPUs and state:

* **image present**: the engine's container image is on the node (else a start pulls it);
* **weights staged**: models whose weights are on the node's disk or in its page cache (the warm
  pool stages them before they are needed; an engine that ran there leaves its weights behind
  when `keep_weights`), at most `staged_per_node` of them, least recently used dropped first;
* **engines asleep**: engines that were scaled down into vLLM's sleep mode instead of exiting.
  An asleep engine still holds its GPUs (they are charged to its model) until it wakes for a
  scale-up of its model, sleeps `sleep_s` out, or is evicted to make room for another start.

A scale-up lands on the warmest place first: an asleep engine of the model (tier `asleep`, woken
in place), else the node with free GPUs whose tier for the model (`staged` when its weights are
there, `image` when only the image is, `cold` otherwise) has the shortest cold start in the
profile; equal times go to the warmer state, then to the lowest node index. (By time, not by state
alone: on the CPU ladder the warm pool read from a page-cache-cold disk was slower than loopback S3.) With no free GPU
anywhere, the longest-asleep engine of another model is evicted to make room; with none to evict,
the replica waits (Pending) until GPUs free up. A profile without a tier (e.g. no `asleep` on a
platform without sleep mode) never offers it: a node in that state pays the next colder tier the
profile has.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from autoscaler.sim.profile import TIERS

__all__ = ["NodeFleet", "Node", "TIER_PRESETS", "fleet_for_tier"]


@dataclass(frozen=True)
class NodeFleet:
    nodes: int                           # GPU nodes in the cluster
    gpus_per_node: int = 8
    image_cached: bool = True            # the image is on every node at the start
    keep_image: bool = True              # a node keeps the image once a start pulled it
    prestage: bool = False               # the warm pool stages every model's weights on every node up front
    keep_weights: bool = True            # an engine that ran on a node leaves its model's weights staged there
    staged_per_node: int | None = None   # models whose weights one node holds (LRU); None: no limit
    sleep_s: float = 0.0                 # a scaled-down engine sleeps this long (holding its GPUs) before it exits

    def __post_init__(self):
        if self.nodes < 1 or self.gpus_per_node < 1:
            raise ValueError(f"node fleet: nodes and gpus_per_node must be >= 1, got {self.nodes}, {self.gpus_per_node}")
        if self.staged_per_node is not None and self.staged_per_node < 0:
            raise ValueError(f"node fleet: staged_per_node must be >= 0, got {self.staged_per_node}")
        if not self.sleep_s >= 0:
            raise ValueError(f"node fleet: sleep_s must be >= 0, got {self.sleep_s!r}")

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    def describe(self) -> str:
        parts = [f"{self.nodes} nodes x {self.gpus_per_node} GPUs",
                 "image cached" if self.image_cached else "no image cached",
                 "image kept after a pull" if self.keep_image else "image not kept",
                 "every model staged up front" if self.prestage else "nothing staged up front",
                 "weights kept after a run" if self.keep_weights else "weights not kept"]
        if self.staged_per_node is not None:
            parts.append(f"at most {self.staged_per_node} models staged per node")
        parts.append(f"scaled-down engines sleep {self.sleep_s:g} s" if self.sleep_s > 0 else "no sleep mode")
        return ", ".join(parts)


def fleet_for_tier(tier: str, nodes: int, gpus_per_node: int = 8, sleep_s: float = 600.0) -> NodeFleet:
    """A fleet whose every start after the first lands on `tier` (the long-tail benchmark's arms):
    `cold` never keeps an image or weights; `image` keeps the image, never weights; `staged` has
    the warm pool stage every model everywhere; `asleep` is `staged` with engines sleeping `sleep_s`
    after a scale-down."""
    if tier not in TIERS:
        raise ValueError(f"tier {tier!r}: expected one of {', '.join(TIERS)}")
    base = dict(nodes=nodes, gpus_per_node=gpus_per_node)
    if tier == "cold":
        return NodeFleet(**base, image_cached=False, keep_image=False, prestage=False, keep_weights=False)
    if tier == "image":
        return NodeFleet(**base, image_cached=True, keep_image=True, prestage=False, keep_weights=False)
    if tier == "staged":
        return NodeFleet(**base, image_cached=True, prestage=True, keep_weights=True)
    return NodeFleet(**base, image_cached=True, prestage=True, keep_weights=True, sleep_s=sleep_s)


TIER_PRESETS = TIERS


@dataclass
class Node:
    idx: int
    gpus: int
    free: int
    image: bool
    staged: OrderedDict = field(default_factory=OrderedDict)   # model name -> None, LRU order (oldest first)
    asleep: list = field(default_factory=list)                   # (model, replica) of engines asleep here

    def tier_for(self, model: str) -> str:
        """The tier a new engine of `model` pays here (ignoring asleep engines, which wake in place)."""
        if not self.image:
            return "cold"
        if model in self.staged:
            return "staged"
        return "image"

    def stage(self, model: str, limit: int | None) -> None:
        if limit == 0:
            return
        self.staged[model] = None
        self.staged.move_to_end(model)
        while limit is not None and len(self.staged) > limit:
            self.staged.popitem(last=False)


def effective_tier(profile, tier: str) -> str:
    """`tier`, or the next colder tier the profile has (a profile lacks e.g. `asleep` on CPU)."""
    i = TIERS.index(tier)
    for t in reversed(TIERS[: i + 1]):
        if profile.cold_start.has_tier(t):
            return t
    for t in TIERS[i + 1:]:
        if profile.cold_start.has_tier(t):
            return t
    raise ValueError(f"profile {profile.name}: no cold-start tier at all")
