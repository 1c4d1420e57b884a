"""Which parameters are weight-sparse, how dense each is at a step, and the projection itself.

Groups (official recipe, paper-notes §2.4):

* ``hidden``: c_attn, attention c_proj, c_fc, MLP c_proj kernels. Density anneals 1 → target. Each
  unit keeps at least ``min_alive`` (j = 4) of its own weights: every q/k/v channel's and every MLP
  neuron's inputs (c_attn / c_fc columns) and every v channel's and MLP neuron's outputs
  (c_proj rows). Residual channels are not protected.
* ``embed``: token embedding ``wte``, learned position embedding ``wpe``, unembedding ``lm_head``.
  They end ``embed_density_factor`` times denser than hidden matrices.
* ``bias``: biases of the four Linear layers; top-k'd with the embed density only when
  ``sparsify_biases`` (the paper says biases are sparse; the official training script never zeroes
  them, so the default is dense).
* ``dense``: everything else (bigram table, norm gains, sink logits). Never projected — but still
  trained: "exempt from the projection" never means frozen.

Groups are decided from parameter paths, so the spec applies to any pytree with the model's
attribute names (NNX state, a pure dict, weights converted from the released checkpoints).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sparsejax.sparse import schedules
from sparsejax.sparse import topk

HIDDEN, EMBED, BIAS, DENSE = "hidden", "embed", "bias", "dense"
_LINEARS = ("c_attn", "c_proj", "c_fc")
# Axis (of the (in, out) kernel) along which each unit's min-alive entries are chosen.
_MIN_ALIVE_AXIS = {"c_attn": 0, "c_fc": 0, "c_proj": 1}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SparsityConfig:
  """Weight sparsity of the official recipe. ``enabled=False`` trains the dense baseline."""

  enabled: bool = True  # False: no projection, no L0 factor in the LR (dense baseline)
  target_density: float = 1 / 16  # final fraction kept per hidden matrix (= pfrac / e²)
  embed_density_factor: float = 4.0  # embeddings end this many times denser (= e)
  embed_schedule: str = "smooth"  # "smooth" (official script) or "abrupt" (paper's models)
  sparsify_biases: bool = False  # top-k the Linear biases with the embed density
  min_alive: int = 4  # j: weights kept per neuron / attention channel (0 disables)
  anneal_start: float = 0.01  # fraction of training where annealing starts (dense before)
  anneal_end: float = 0.5  # fraction of training where the target is reached
  anneal_mode: str = "linear"  # "linear" or "power_law" (log density linear in log step)
  # Thresholds tested per pass of the projection's search; None: the backend's default
  # (sparsejax.sparse.topk.default_candidates).
  candidates_per_pass: int | None = None
  # Start each step's threshold search around the previous step's thresholds (kept in the
  # optimizer state) and stop once every count is exact: a data-dependent loop of typically 3-5
  # passes instead of a fixed ~11 (p = 7). False: the fixed loop (no data-dependent trip count,
  # so no host round trip per pass on XLA:GPU). Either way the result is exact.
  warm_start: bool = True

  def __post_init__(self):
    if not 0.0 < self.target_density <= 1.0:
      raise ValueError(f"SparsityConfig.target_density: must be in (0, 1], got "
                       f"{self.target_density}")
    if self.embed_density_factor < 1.0:
      raise ValueError("SparsityConfig.embed_density_factor: must be >= 1, got "
                       f"{self.embed_density_factor}")
    if not 0.0 <= self.anneal_start <= self.anneal_end <= 1.0:
      raise ValueError("SparsityConfig.anneal_start/anneal_end: need 0 <= start <= end <= 1, got "
                       f"{self.anneal_start}, {self.anneal_end}")
    if self.embed_schedule not in ("smooth", "abrupt"):
      raise ValueError(f"SparsityConfig.embed_schedule: must be 'smooth' or 'abrupt', got "
                       f"{self.embed_schedule!r}")
    if self.anneal_mode not in ("linear", "power_law"):
      raise ValueError(f"SparsityConfig.anneal_mode: must be 'linear' or 'power_law', got "
                       f"{self.anneal_mode!r}")
    if self.min_alive < 0 or (self.candidates_per_pass is not None
                              and self.candidates_per_pass < 1):
      raise ValueError("SparsityConfig.min_alive must be >= 0 and candidates_per_pass >= 1")

  @classmethod
  def from_pfrac(cls, pfrac: float, expansion_factor: float, **kw) -> "SparsityConfig":
    """The official parametrisation: L0 = pfrac × (1x model), width e. Hidden density pfrac / e²."""
    return cls(target_density=min(1.0, pfrac / expansion_factor**2),
               embed_density_factor=expansion_factor, **kw)

  # ---------------------------------------------------------------- schedules
  def hidden_density(self, step, total_steps: int):
    if not self.enabled:
      return jnp.ones((), jnp.float32)
    return schedules.hidden_density(step, total_steps=total_steps, target=self.target_density,
                                    anneal_start=self.anneal_start, anneal_end=self.anneal_end,
                                    mode=self.anneal_mode)

  def group_density(self, group: str, step, total_steps: int):
    """Target fraction of nonzeros of a group at ``step``."""
    d = self.hidden_density(step, total_steps)
    if not self.enabled or group == DENSE or (group == BIAS and not self.sparsify_biases):
      return jnp.ones((), jnp.float32)
    if group == HIDDEN:
      return d
    return schedules.embed_density(d, target=self.target_density,
                                   factor=self.embed_density_factor, mode=self.embed_schedule)

  def lr_factor(self, step, total_steps: int):
    """The sharkfin's sqrt(d_final / d_t) (1 when sparsity is off)."""
    return jnp.sqrt(self.target_density / self.hidden_density(step, total_steps)) if (
        self.enabled) else jnp.ones((), jnp.float32)


class LeafSpec(NamedTuple):
  """How one parameter is treated by the projection."""

  group: str  # HIDDEN, EMBED, BIAS or DENSE
  min_alive_axis: int | None  # axis of the (in, out) kernel along which each unit is protected


def path_names(path) -> tuple[str, ...]:
  """A pytree key path as plain strings (dict keys, attributes, indices)."""
  out = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        out.append(str(getattr(k, attr)))
        break
  return tuple(n for n in out if n != "value")


def leaf_spec(names: tuple[str, ...]) -> LeafSpec:
  """The group of a parameter, from its path names."""
  last, parent = names[-1], (names[-2] if len(names) > 1 else "")
  if last == "kernel" and parent in _LINEARS:
    return LeafSpec(HIDDEN, _MIN_ALIVE_AXIS[parent])
  if names in (("wte",), ("wpe",), ("lm_head", "kernel")):
    return LeafSpec(EMBED, None)
  if last == "bias" and parent in _LINEARS:
    return LeafSpec(BIAS, None)
  return LeafSpec(DENSE, None)


def sparsity_spec(params) -> Any:
  """A pytree of :class:`LeafSpec` with the structure of ``params``."""
  return jax.tree_util.tree_map_with_path(lambda p, _: leaf_spec(path_names(p)), params)


def _is_spec(x) -> bool:
  return isinstance(x, LeafSpec)


def leaf_k(spec: LeafSpec, numel: int, cfg: SparsityConfig, step, total_steps: int):
  """k = int(min(density, 1) · numel): entries a leaf keeps at ``step`` (int32)."""
  d = jnp.minimum(cfg.group_density(spec.group, step, total_steps), 1.0)
  return jnp.floor(d * jnp.float32(numel)).astype(jnp.int32)


def is_sparse_group(spec: LeafSpec, cfg: SparsityConfig) -> bool:
  """Whether a leaf belongs to a group the recipe makes sparse (counted in L0)."""
  return spec.group in (HIDDEN, EMBED) or (spec.group == BIAS and cfg.sparsify_biases)


def is_projected(spec: LeafSpec, cfg: SparsityConfig) -> bool:
  """Whether the projection touches a leaf (never when sparsity is disabled)."""
  return cfg.enabled and is_sparse_group(spec, cfg)


def projected_leaves(params, cfg: SparsityConfig) -> list[int]:
  """Indices (in ``jax.tree.leaves`` order) of the leaves the projection touches."""
  specs = jax.tree.leaves(sparsity_spec(params), is_leaf=_is_spec)
  return [i for i, s in enumerate(specs) if is_projected(s, cfg)]


class Projection(NamedTuple):
  """What :func:`projection_masks` found."""

  masks: Any  # pytree like params: bool masks of kept entries, None for untouched leaves
  l0: jax.Array  # int32: entries kept, summed over the masks
  thresholds: jax.Array  # (n_projected,) int32 threshold keys (the next step's warm start)
  passes: jax.Array  # int32: counting passes the search took


def projection_masks(params, cfg: SparsityConfig, step, total_steps: int,
                     warm: jax.Array | None = None) -> Projection:
  """Masks of the entries every projected parameter keeps at ``step``, found together.

  One search loop for all projected matrices (:func:`sparsejax.sparse.topk.topk_masks_many`):
  every pass counts all of them at once. ``warm`` — the previous step's ``thresholds`` — starts
  the search there (with ``cfg.warm_start``); the result is exact either way.

  l0 is counted from the masks themselves: k is a float32 schedule value, and XLA may evaluate
  that expression in more than one fusion with different rounding, so recomputing k elsewhere
  can disagree with the selection by one entry.
  """
  specs = jax.tree.leaves(sparsity_spec(params), is_leaf=_is_spec)
  leaves, treedef = jax.tree.flatten(params)
  index = projected_leaves(params, cfg)
  if not index:
    return Projection(jax.tree.unflatten(treedef, [None] * len(leaves)), jnp.zeros((), jnp.int32),
                      jnp.zeros((0,), jnp.int32), jnp.zeros((), jnp.int32))
  with jax.named_scope("projection"):
    keys, ks, hi = [], [], 0
    for i in index:
      s, w = specs[i], leaves[i]
      j = cfg.min_alive if s.group == HIDDEN else 0
      key, h = topk.weight_keys(w, min_alive=j, min_alive_axis=s.min_alive_axis)
      keys.append(key)
      ks.append(leaf_k(s, w.size, cfg, step, total_steps))
      hi = max(hi, h)
    found = topk.topk_masks_many(keys, jnp.stack(ks), hi=hi,
                                 candidates_per_pass=cfg.candidates_per_pass,
                                 warm=warm if cfg.warm_start else None)
  out = [None] * len(leaves)
  for i, m in zip(index, found.masks):
    out[i] = m
  l0 = sum((jnp.sum(m, dtype=jnp.int32) for m in found.masks), jnp.zeros((), jnp.int32))
  return Projection(jax.tree.unflatten(treedef, out), l0, found.thresholds, found.passes)


def keep_masks(params, cfg: SparsityConfig, step, total_steps: int):
  """(masks, l0): bool masks of the entries each parameter keeps at ``step`` (None for leaves the
  projection does not touch) and the number of entries the masks keep, summed (int32).

  A search from scratch (see :func:`projection_masks` for the warm-started one).
  """
  found = projection_masks(params, cfg, step, total_steps)
  return found.masks, found.l0


def project(params, cfg: SparsityConfig, step, total_steps: int):
  """Zeroes every entry outside the top-k of each projected parameter."""
  masks, _ = keep_masks(params, cfg, step, total_steps)
  return jax.tree.map(lambda m, w: w if m is None else jnp.where(m, w, jnp.zeros((), w.dtype)),
                      masks, params, is_leaf=lambda x: x is None)


def sparse_numel(params, cfg: SparsityConfig) -> int:
  """Number of entries in the sparse groups (the denominator of the L0 fraction)."""
  spec = sparsity_spec(params)
  return sum(w.size for s, w in zip(jax.tree.leaves(spec, is_leaf=_is_spec),
                                    jax.tree.leaves(params)) if is_sparse_group(s, cfg))


def measured_density(params, cfg: SparsityConfig | None = None) -> dict[str, float]:
  """Measured fraction of nonzeros per group (all groups when ``cfg`` is None), and 'projected'."""
  spec = sparsity_spec(params)
  counts: dict[str, list[int]] = {}
  for s, w in zip(jax.tree.leaves(spec, is_leaf=_is_spec), jax.tree.leaves(params)):
    nz = int(jnp.count_nonzero(w))
    keys = [s.group]
    if cfg is not None and is_projected(s, cfg):
      keys.append("projected")
    for key in keys:
      c = counts.setdefault(key, [0, 0])
      c[0] += nz
      c[1] += w.size
  return {g: nz / n for g, (nz, n) in counts.items() if n}
