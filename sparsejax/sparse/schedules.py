"""Schedules of the official recipe, as jit-friendly functions of the step.

* L0 anneal: the fraction of nonzero weights kept in each hidden matrix goes from 1 (dense) to the
  target, linearly between ``anneal_start`` and ``anneal_end`` (fractions of training; 1 % and 50 %
  by default), or log-log linearly ("power_law" mode).
* Embedding / unembedding / bias density: ends ``embed_density_factor`` (the expansion factor e)
  times denser than hidden matrices. "smooth" follows the official training script's ``adj``:
  ``lerp(min(1, e·d_final), 1, r)`` with ``r = (d_t − d_final) / (1 − d_final)``; "abrupt" is the
  paper's models' behaviour ``min(1, e·d_t)``, which stays dense until late in the anneal.
* The "sharkfin" learning rate: linear warmup over ``warmup_frac`` of training, linear decay to 0,
  times ``sqrt(d_final / d_t)`` (the paper's ×1/√L0; without it annealing does not help).
"""

from __future__ import annotations

import math

import jax.numpy as jnp


def hidden_density(step, *, total_steps: int, target: float, anneal_start: float = 0.01,
                   anneal_end: float = 0.5, mode: str = "linear"):
  """Fraction of entries kept in each hidden matrix at ``step`` (1 → ``target``)."""
  step = jnp.asarray(step, jnp.float32)
  t0 = anneal_start * total_steps
  t1 = max(anneal_end * total_steps, t0 + 1e-6)
  if mode == "linear":
    frac = jnp.clip((step - t0) / (t1 - t0), 0.0, 1.0)
    return 1.0 + (target - 1.0) * frac
  if mode == "power_law":
    # log(density) linear in log(step) between t0 and t1 (t0 clamped to >= 1).
    t0 = max(t0, 1.0)
    t1 = max(t1, t0 * (1 + 1e-6))
    frac = jnp.clip((jnp.log(jnp.maximum(step, t0)) - math.log(t0)) / math.log(t1 / t0), 0.0, 1.0)
    return jnp.exp(frac * math.log(target))
  raise ValueError(f"anneal mode must be 'linear' or 'power_law', got {mode!r}")


def embed_density(hidden_d, *, target: float, factor: float, mode: str = "smooth"):
  """Density of embedding, unembedding (and projected biases) given the hidden density."""
  if mode == "smooth":
    r = (hidden_d - target) / (1.0 - target) if target < 1.0 else 0.0
    start = min(1.0, factor * target)
    return jnp.minimum(1.0, start + (1.0 - start) * r)
  if mode == "abrupt":
    return jnp.minimum(1.0, factor * hidden_d)
  raise ValueError(f"embed schedule must be 'smooth' or 'abrupt', got {mode!r}")


def warmup_linear_decay(step, *, total_steps: int, warmup_frac: float = 0.01):
  """w(t) = t / W for t < W, then 1 − (t − W) / (T − W); W = warmup_frac · T."""
  step = jnp.asarray(step, jnp.float32)
  w = warmup_frac * total_steps
  decay = 1.0 - (step - w) / max(total_steps - w, 1e-6)
  if w <= 0:
    return jnp.clip(decay, 0.0, 1.0)
  return jnp.clip(jnp.where(step < w, step / w, decay), 0.0, 1.0)

