"""The official optimizer as an optax chain, with the top-k weight projection as its last link.

Per step (paper-notes §2.3; the official training script's order):

  1. ``normalize_by_global_rms``: g ← g / (rms(g) + 1e-5), rms over *all* parameters.
  2. ``optax.scale_by_adam(b1=0.9, b2=0.95, eps=0.1)``: moments are dense for every weight, including
     ones currently zero, so pruned weights can come back.
  3. ``optax.scale_by_learning_rate(sharkfin)``: warmup, linear decay, × sqrt(d_final / d_t).
  4. ``decay_after_update``: p' = (p + u) · (1 − wd · lr_t) on matrices except the bigram table
     (decoupled weight decay applied after the Adam step, as the official script does).
  5. ``keep_topk``: rewrites the updates so that ``params + updates`` keeps exactly k entries of each
     projected matrix. It must be last: it looks at the final new parameters. (Decay scales a matrix
     uniformly, so decaying before or after selecting gives the same entries.)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sparsejax.sparse import schedules
from sparsejax.sparse.sparsity import (SparsityConfig, path_names, projected_leaves,
                                       projection_masks)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimConfig:
  """Optimizer hyperparameters (official defaults; lr from the official training script)."""

  lr: float = 1.28e-2  # peak learning rate before the ×sqrt(d_final / d_t) factor
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 0.1  # Adam epsilon: large on purpose (paper ablates 1, 0.01, 0.001)
  weight_decay: float = 0.1  # decoupled; matrices only, not the bigram table
  warmup_frac: float = 0.01  # linear warmup over this fraction of training
  normalize_grads: bool = True  # divide gradients by their global RMS every step
  grad_rms_eps: float = 1e-5

  def __post_init__(self):
    for name in ("lr", "eps", "grad_rms_eps"):
      if not getattr(self, name) > 0:
        raise ValueError(f"OptimConfig.{name}: must be > 0, got {getattr(self, name)}")
    for name in ("b1", "b2"):
      if not 0 <= getattr(self, name) < 1:
        raise ValueError(f"OptimConfig.{name}: must be in [0, 1), got {getattr(self, name)}")
    if self.weight_decay < 0 or not 0 <= self.warmup_frac <= 1:
      raise ValueError("OptimConfig: weight_decay must be >= 0 and warmup_frac in [0, 1]")


class CountState(NamedTuple):
  count: jax.Array  # number of updates applied so far


class KeepTopkState(NamedTuple):
  count: jax.Array  # number of updates applied so far
  l0: jax.Array  # entries kept by the last projection, summed over projected parameters
  threshold: jax.Array  # (n_projected,) int32 threshold keys of the last projection (warm start)
  passes: jax.Array  # counting passes the last projection's search took (diagnostics)


def _count_init(params):
  del params
  return CountState(count=jnp.zeros([], jnp.int32))


def global_rms(tree) -> jax.Array:
  """sqrt(mean of squares) over every entry of every leaf."""
  leaves = jax.tree.leaves(tree)
  n = sum(x.size for x in leaves)
  sq = sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves)
  return jnp.sqrt(sq / n)


def normalize_by_global_rms(eps: float = 1e-5) -> optax.GradientTransformation:
  """g ← g / (rms(g) + eps) with rms over all parameters: every step's gradient has RMS ≈ 1.

  Goes first in the chain, on raw gradients.
  """

  def update_fn(updates, state, params=None):
    del params
    scale = 1.0 / (global_rms(updates) + eps)
    return jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def default_decay_mask(params):
  """True for matrices (ndim > 1) except the bigram table: the parameters that get weight decay."""
  return jax.tree_util.tree_map_with_path(
      lambda p, x: x.ndim > 1 and "bigram_table" not in path_names(p), params)


def decay_after_update(weight_decay: float, learning_rate: Callable,
                       mask: Callable = default_decay_mask) -> optax.GradientTransformation:
  """Decoupled weight decay applied to the *updated* parameters: p' = (p + u)(1 − wd · lr_t).

  Place after the learning-rate scaling (``updates`` are then the final Adam step) and before
  ``keep_topk``. ``learning_rate`` is a schedule of the step count.
  """

  def update_fn(updates, state, params):
    if params is None:
      raise ValueError("decay_after_update needs params")
    decay = weight_decay * learning_rate(state.count)
    updates = jax.tree.map(
        lambda m, u, p: u - decay * (p + u) if m else u, mask(params), updates, params)
    return updates, CountState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(_count_init, update_fn)


def keep_topk(sparsity: SparsityConfig, total_steps: int) -> optax.GradientTransformation:
  """Projects ``params + updates`` onto the top-k set of every projected matrix. Goes LAST.

  For each projected leaf, the new parameters ``w = params + updates`` (computed exactly as
  ``optax.apply_updates`` will) keep their k(step) largest-magnitude entries (exact, ties to the
  lowest index, at least ``min_alive`` per unit for hidden matrices); the updates of all other
  entries become ``-params``, so they are exactly zero after the update. k follows the L0 anneal of
  ``sparsity`` at this transform's step count. Unprojected leaves pass through unchanged.

  All projected matrices are searched in one loop; each step's search starts from the previous
  step's thresholds, kept in this transform's state (``sparsity.warm_start``).
  """

  def init_fn(params):
    n = len(projected_leaves(params, sparsity))
    return KeepTopkState(count=jnp.zeros([], jnp.int32), l0=jnp.zeros([], jnp.int32),
                         threshold=jnp.zeros((n,), jnp.int32), passes=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params):
    if params is None:
      raise ValueError("keep_topk needs params")
    new = jax.tree.map(lambda p, u: jnp.asarray(p + u).astype(p.dtype), params, updates)
    found = projection_masks(new, sparsity, state.count, total_steps, warm=state.threshold)
    updates = jax.tree.map(
        lambda m, u, p: u if m is None else jnp.where(m, u, -p), found.masks, updates, params,
        is_leaf=lambda x: x is None)
    return updates, KeepTopkState(count=optax.safe_increment(state.count), l0=found.l0,
                                  threshold=found.thresholds, passes=found.passes)

  return optax.GradientTransformation(init_fn, update_fn)


def learning_rate_schedule(optim: OptimConfig, sparsity: SparsityConfig,
                           total_steps: int) -> Callable:
  """The sharkfin: lr · warmup/linear decay · sqrt(d_final / d_t)."""

  def schedule(step):
    w = schedules.warmup_linear_decay(step, total_steps=total_steps, warmup_frac=optim.warmup_frac)
    return optim.lr * w * sparsity.lr_factor(step, total_steps)

  return schedule


def sparse_adam(optim: OptimConfig, sparsity: SparsityConfig,
                total_steps: int) -> optax.GradientTransformation:
  """The full official chain (see the module docstring)."""
  lr = learning_rate_schedule(optim, sparsity, total_steps)
  links = []
  if optim.normalize_grads:
    links.append(normalize_by_global_rms(optim.grad_rms_eps))
  links += [
      optax.scale_by_adam(b1=optim.b1, b2=optim.b2, eps=optim.eps),
      optax.scale_by_learning_rate(lr),
  ]
  if optim.weight_decay:
    links.append(decay_after_update(optim.weight_decay, lr))
  if sparsity.enabled:
    links.append(keep_topk(sparsity, total_steps))
  return optax.chain(*links)
