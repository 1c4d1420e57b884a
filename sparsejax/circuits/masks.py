"""The pure math of circuit pruning: nodes, masks, the task loss of a circuit, one optimizer step.

The method of Gao et al. 2025 (§2.2, App. A.5; paper-notes §3):

* **Nodes** are the entries of mask vectors at ``{L}.attn.act_in``, ``{L}.attn.q|k|v``,
  ``{L}.attn.resid_delta``, ``{L}.mlp.act_in``, ``{L}.mlp.post_act``, ``{L}.mlp.resid_delta``
  (after AbsTopK, through the model's ``interventions`` argument). A node that is off takes its
  mean over pretraining tokens (mean ablation, the paper) or zero (Drori's variant):
  x ← m·x + (1 − m)·μ.
* **Masks**: one τ per unit (a node here, an edge in :mod:`edge_pruning`), clamped to [−1, 1].
  Forward m = H(τ) (Heaviside); backward the sigmoid-derivative surrogate σ'(τ/T)/T
  (straight-through with temperature T). Init τ ~ N(bias, scale²), clamped.
* **Objective**: task loss + k_coef · Σ_i H(τ_i). The task loss of a pair is the binary
  cross-entropy over its two candidate tokens, softplus(−z) with the *margin*
  z = l(correct) − l(alternative) of each sequence; every loss and the logit calibration are
  functions of the margins (P, 2), so an evaluation returns margins and nothing else.
* **Optimizer**: an optax chain per member, clip_by_global_norm → adamw (β1 0.9, β2 = 1 − inv_beta2,
  ε 1e-8, decoupled weight decay) with a linear warmup then linear decay, τ clamped after the
  update. Hyperparameters are traced arrays, so one compiled step serves every member of a vmapped
  population; the numbers are those of the hand-written AdamW this replaced (tested).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparsejax.model import sites as sites_lib
from sparsejax.model.config import GPTConfig
from sparsejax.model.gpt import merge
from sparsejax.model.sites import PRUNE_SITES


# ------------------------------------------------------------------ nodes
@dataclasses.dataclass(frozen=True)
class NodeLayout:
  """All prunable nodes of a model as one flat vector, site by site in forward order."""

  sites: tuple[str, ...]
  widths: tuple[int, ...]

  @classmethod
  def for_model(cls, cfg: GPTConfig) -> "NodeLayout":
    sites = tuple(f"{layer}.{s}" for layer in range(cfg.n_layer) for s in PRUNE_SITES)
    return cls(sites, tuple(sites_lib.site_width(cfg, s) for s in sites))

  @property
  def n_nodes(self) -> int:
    return sum(self.widths)

  @property
  def offsets(self) -> tuple[int, ...]:
    return tuple(np.cumsum((0,) + self.widths[:-1]).tolist())

  def split(self, flat) -> dict:
    """Flat (..., n_nodes) → {site: (..., width)}."""
    return {s: flat[..., o:o + w] for s, o, w in zip(self.sites, self.offsets, self.widths)}

  def interventions(self, mask_flat, values_flat) -> dict:
    masks, values = self.split(mask_flat), self.split(values_flat)
    return {s: sites_lib.Intervention(masks[s], values[s]) for s in self.sites}

  def site_of(self, index: int) -> tuple[str, int]:
    for s, o, w in zip(self.sites, self.offsets, self.widths):
      if o <= index < o + w:
        return s, index - o
    raise IndexError(index)

  def nodes_of(self, mask_flat) -> dict[str, list[int]]:
    """{site: sorted kept indices} of a hard mask (every site, empty lists included)."""
    return {s: np.nonzero(np.asarray(m) > 0)[0].tolist() for s, m in self.split(mask_flat).items()}

  def mask_of(self, nodes: dict[str, list[int]]) -> np.ndarray:
    """The flat hard mask (float32) of {site: kept indices}."""
    mask = np.zeros(self.n_nodes, np.float32)
    for s, o in zip(self.sites, self.offsets):
      ids = nodes.get(s, [])
      if len(ids):
        mask[o + np.asarray(ids)] = 1.0
    return mask


def site_means(graphdef, params, buffers, sites, token_batches) -> dict[str, np.ndarray]:
  """Mean activation of every channel of ``sites`` over (B, T) token batches: {site: (width,)}."""
  sites = tuple(sites)

  @jax.jit
  def sums(tokens):
    model = merge(graphdef, params, buffers)
    _, cache = model.run_with_cache(tokens, sites)
    return {s: cache[s].astype(jnp.float32).sum(axis=(0, 1)) for s in sites}

  total, count = None, 0
  for b in token_batches:
    s = {k: np.asarray(v, np.float64) for k, v in sums(jnp.asarray(b)).items()}
    total = s if total is None else {k: total[k] + s[k] for k in s}
    count += b.shape[0] * b.shape[1]
  return {k: (v / count).astype(np.float32) for k, v in total.items()}


def node_means(graphdef, params, buffers, layout: NodeLayout, token_batches) -> np.ndarray:
  """Mean activation of every node over the given (B, T) token batches (float32, n_nodes)."""
  means = site_means(graphdef, params, buffers, layout.sites, token_batches)
  return np.concatenate([means[s] for s in layout.sites])


# ------------------------------------------------------------------ masks and the task loss
def heaviside_ste(tau, temp):
  """H(τ) forward; d/dτ = σ'(τ/T)/T backward."""
  soft = jax.nn.sigmoid(tau / temp)
  hard = (tau > 0).astype(tau.dtype)
  return soft + jax.lax.stop_gradient(hard - soft)


def circuit_margins(graphdef, params, buffers, layout: NodeLayout, mask, values, data):
  """Margins z = l(correct) − l(alt) (P, S) of every sequence of ``data`` (a :class:`TaskData`)
  with nodes off where ``mask`` is 0 (set to ``values``). ``params`` may carry ablated edges
  (:func:`sparsejax.circuits.edge_pruning.ablate_edges`)."""
  model = merge(graphdef, params, buffers)
  b = data.batch
  P, S, T = b.tokens.shape
  logits = model(b.tokens.reshape(P * S, T), interventions=layout.interventions(mask, values),
                 positions_B=b.last.reshape(P * S),
                 final_rms_B=None if data.rms is None else data.rms.reshape(P * S))
  logits = logits.reshape(P, S, -1)
  pick = lambda tok: jnp.take_along_axis(logits, tok[..., None], axis=-1)[..., 0]
  return pick(b.correct) - pick(b.alt)


def task_loss(margins_PS):
  """The official task loss: mean over sequences of softplus(−margin)."""
  return jax.nn.softplus(-margins_PS).mean()


# ------------------------------------------------------------------ hyperparameters and a step
HYPER_NAMES = ("k_coef", "lr", "init_noise_scale", "init_noise_bias", "weight_decay", "inv_beta2",
               "warmup_frac", "heaviside_temp")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hypers:
  """One member's mask-learning hyperparameters (scalars), or a population's ((M,) arrays).

  Names and centres are the paper's CARBS ones (Table 2)."""

  k_coef: Any  # weight of the size penalty Σ H(τ)
  lr: Any  # peak learning rate
  init_noise_scale: Any  # τ init std
  init_noise_bias: Any  # τ init mean (> 0: every unit starts on)
  weight_decay: Any  # decoupled weight decay on τ
  inv_beta2: Any  # 1 − Adam β2
  warmup_frac: Any  # fraction of the steps with a linear warmup
  heaviside_temp: Any  # surrogate temperature T

  def take(self, idx) -> "Hypers":
    return jax.tree.map(lambda a: a[idx], self)

  def asdict(self) -> dict:
    return {h: getattr(self, h) for h in HYPER_NAMES}


def learning_rate(step, total_steps, lr, warmup_frac):
  """Linear warmup over warmup_frac · total steps, then linear decay to 0 at ``total_steps``."""
  w = jnp.maximum(warmup_frac * total_steps, 1e-6)
  warm = jnp.minimum(1.0, (step + 1) / w)
  decay = jnp.clip(1.0 - step / total_steps, 0.0, 1.0)
  return lr * jnp.minimum(warm, decay)


def optimizer(hp: Hypers, step, total_steps: int, grad_clip: float):
  """The optax chain of one member at one step (its hyperparameters may be traced)."""
  lr = learning_rate(step, total_steps, hp.lr, hp.warmup_frac)
  return optax.chain(optax.clip_by_global_norm(grad_clip),
                     optax.adamw(lr, b1=0.9, b2=1.0 - hp.inv_beta2, eps=1e-8,
                                 weight_decay=hp.weight_decay))


def init_opt_state(tau):
  """The optimizer state of :func:`optimizer` (its structure does not depend on the values)."""
  return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(0.0)).init(tau)


def init_tau(seed: int, bias: float, scale: float, n: int) -> np.ndarray:
  """τ ~ N(bias, scale²) clamped to [−1, 1], from a NumPy generator seeded by ``seed`` alone (a
  member's start does not depend on which call or population it is in)."""
  rng = np.random.default_rng([int(seed), 11])
  return np.clip(bias + scale * rng.standard_normal(n), -1.0, 1.0).astype(np.float32)


def mask_step(tau, opt_state, step, loss_of_mask: Callable, hp: Hypers, *, total_steps: int,
              grad_clip: float, valid=None):
  """One optimizer step on τ for the objective loss_of_mask(H(τ)) + k_coef · Σ valid · H(τ).

  ``valid`` (0/1 per unit) leaves padding out of the size penalty. Returns (τ, optimizer state,
  task loss, units on)."""

  def objective(t):
    mask = heaviside_ste(t, hp.heaviside_temp)
    task = loss_of_mask(mask)
    on = mask if valid is None else mask * valid
    return task + hp.k_coef * jnp.sum(on), (task, jnp.sum(jax.lax.stop_gradient(on) > 0))

  (_, (task, kept)), grad = jax.value_and_grad(objective, has_aux=True)(tau)
  updates, opt_state = optimizer(hp, step, total_steps, grad_clip).update(grad, opt_state, tau)
  tau = jnp.clip(optax.apply_updates(tau, updates), -1.0, 1.0)
  return tau, opt_state, task, kept
