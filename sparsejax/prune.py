"""Circuit pruning: learn node masks for many tasks × hyperparameter candidates in one vmapped jit.

The method of Gao et al. 2025 (§2.2, App. A.5; paper-notes §3), with its unknowns made options:

* **Nodes** are the entries of mask vectors at ``{L}.attn.act_in``, ``{L}.attn.q|k|v``,
  ``{L}.attn.resid_delta``, ``{L}.mlp.act_in``, ``{L}.mlp.post_act``, ``{L}.mlp.resid_delta``
  (after AbsTopK, through the model's ``interventions`` argument). A node that is off takes its mean
  over pretraining tokens (``ablation="mean"``, the paper) or zero (``"zero"``, Drori's variant).
* **Masks**: one τ per node, clamped to [−1, 1]. Forward: m = H(τ) (Heaviside). Backward: the
  sigmoid-derivative surrogate σ'(τ/T)/T (straight-through with temperature T). Init τ ~
  N(bias, scale²), clamped.
* **Objective**: task loss (per-sequence binary CE over the two candidate tokens) + k_coef · Σ H(τ).
  AdamW with gradient clipping and a linear warmup / linear decay schedule.
* **One jit**: every member of the population (a task, or its shuffled-label control, × a
  hyperparameter candidate) has its own τ, Adam moments, hyperparameters and task data; the frozen
  model is shared. ``jax.vmap`` over members, ``lax.scan`` over steps. This replaces the paper's
  sequential CARBS runs with a random population around the paper's search centres.
* **Discretize**: nodes ranked by τ; bisection over k finds the smallest top-k mask whose held-out
  task loss is at or below the target (loss is assumed monotone enough in k for bisection).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax import sites as sites_lib, tasks as tasks_lib, train_step
from sparsejax.config import GPTConfig

PRUNE_SITES = ("attn.act_in", "attn.q", "attn.k", "attn.v", "attn.resid_delta", "mlp.act_in",
               "mlp.post_act", "mlp.resid_delta")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PruneConfig:
  """Mask learning, population and discretization. Centres are the paper's CARBS centres."""

  steps: int = 200  # mask-learning steps per member
  batch_pairs: int = 8  # task pairs per step (2 sequences each)
  candidates: int = 4  # hyperparameter candidates per task
  train_pairs: int = 256  # pairs masks are learned on
  val_pairs: int = 64  # held-out pairs for the bisection over k
  test_pairs: int = 128  # held-out pairs every reported loss is measured on
  target_loss: float = 0.15  # the circuit must reach this task loss
  ablation: str = "mean"  # "mean" (pretraining mean) or "zero"
  mean_tokens: int = 65536  # held-out pretraining tokens the means are computed on
  seed: int = 0
  # Search centres (paper Table 2) and how far candidates are spread around them (log10 units).
  k_coef: float = 1e-4
  lr: float = 3e-3
  init_noise_scale: float = 1e-2
  init_noise_bias: float = 1e-1
  weight_decay: float = 1e-3
  inv_beta2: float = 5e-2
  warmup_frac: float = 5e-2
  heaviside_temp: float = 1.0
  spread: float = 0.5  # candidates draw each centre × 10^U(-spread, spread); candidate 0 = centres
  grad_clip: float = 1.0
  calibrate: bool = True  # fit a logit scale + shift on the circuit (reported next to raw loss)
  freeze_final_norm: bool = False  # ln_f uses the unpruned model's normaliser (Drori critique)
  random_circuits: int = 5  # random circuits with the same nodes per site (control)
  control: bool = True  # also prune a shuffled-label copy of each task (control)
  chunk_steps: int = 25  # steps per compiled scan chunk (progress is reported between chunks)
  bisect_rtol: float = 0.0  # stop bisecting once the size is known to within this fraction

  def __post_init__(self):
    for name in ("steps", "batch_pairs", "candidates", "train_pairs", "val_pairs", "test_pairs",
                 "mean_tokens", "chunk_steps"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
    if self.ablation not in ("mean", "zero"):
      raise ValueError(f"ablation: must be 'mean' or 'zero', got {self.ablation!r}")
    if not self.target_loss > 0:
      raise ValueError(f"target_loss: must be > 0, got {self.target_loss}")
    if self.random_circuits < 0:
      raise ValueError("random_circuits: must be >= 0")


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


def node_means(graphdef, params, buffers, layout: NodeLayout, token_batches) -> np.ndarray:
  """Mean activation of every node over the given (B, T) token batches (float32, n_nodes)."""

  @jax.jit
  def sums(tokens):
    model = train_step.merge(graphdef, params, buffers)
    _, cache = model.run_with_cache(tokens, layout.sites)
    return jnp.concatenate([cache[s].astype(jnp.float32).sum(axis=(0, 1)) for s in layout.sites])

  total, count = np.zeros(layout.n_nodes, np.float64), 0
  for b in token_batches:
    total += np.asarray(sums(jnp.asarray(b)), np.float64)
    count += b.shape[0] * b.shape[1]
  return (total / count).astype(np.float32)


# ------------------------------------------------------------------ masks and the objective
def heaviside_ste(tau, temp):
  """H(τ) forward; d/dτ = σ'(τ/T)/T backward."""
  soft = jax.nn.sigmoid(tau / temp)
  hard = (tau > 0).astype(tau.dtype)
  return soft + jax.lax.stop_gradient(hard - soft)


def circuit_logits(graphdef, params, buffers, layout: NodeLayout, mask, values, tokens_PST,
                   last_PS, final_rms_PS=None):
  """Last-position logits (P, S, V) with nodes off where ``mask`` is 0 (set to ``values``)."""
  model = train_step.merge(graphdef, params, buffers)
  P, S, T = tokens_PST.shape
  logits = model(tokens_PST.reshape(P * S, T), interventions=layout.interventions(mask, values),
                 positions_B=last_PS.reshape(P * S),
                 final_rms_B=None if final_rms_PS is None else final_rms_PS.reshape(P * S))
  return logits.reshape(P, S, -1)


def circuit_loss(graphdef, params, buffers, layout, mask, values, batch: dict):
  """Mean task loss of a (hard or soft) mask on a dict batch (tokens/last/correct/alt/rms)."""
  logits = circuit_logits(graphdef, params, buffers, layout, mask, values, batch["tokens"],
                          batch["last"], batch.get("rms"))
  loss, _ = tasks_lib.pair_loss(logits, batch["correct"], batch["alt"])
  return loss.mean()


# ------------------------------------------------------------------ the population
@dataclasses.dataclass
class Population:
  """Per-member hyperparameters (arrays of shape (M,)) and which task group each trains on."""

  group: np.ndarray  # int (M,): index into the stacked task groups
  k_coef: np.ndarray
  lr: np.ndarray
  init_noise_scale: np.ndarray
  init_noise_bias: np.ndarray
  weight_decay: np.ndarray
  inv_beta2: np.ndarray
  warmup_frac: np.ndarray
  heaviside_temp: np.ndarray
  seed: np.ndarray  # int (M,): per-member RNG seed (init noise and batch order)

  HYPERS = ("k_coef", "lr", "init_noise_scale", "init_noise_bias", "weight_decay", "inv_beta2",
            "warmup_frac", "heaviside_temp")

  def __len__(self) -> int:
    return len(self.group)

  def member(self, i: int) -> dict:
    return {h: float(getattr(self, h)[i]) for h in self.HYPERS} | {"seed": int(self.seed[i])}


def candidate_hypers(cfg: PruneConfig, n: int, seed: int) -> list[dict]:
  """n hyperparameter sets: the paper's centres, then draws spread log-uniformly around them."""
  rng = np.random.default_rng([seed, 7])
  centres = {h: getattr(cfg, h) for h in Population.HYPERS}
  out = [dict(centres)]
  for _ in range(n - 1):
    draw = {h: c * 10 ** rng.uniform(-cfg.spread, cfg.spread) for h, c in centres.items()}
    draw["inv_beta2"] = min(draw["inv_beta2"], 0.5)
    draw["warmup_frac"] = min(draw["warmup_frac"], 0.5)
    out.append(draw)
  return out[:n]


def make_population(cfg: PruneConfig, n_groups: int, group_seeds: list[int]) -> Population:
  """cfg.candidates members per group; candidate c of every group shares hyperparameters, and a
  member's seed depends only on (group seed, c), so a task pruned alone gets the same members."""
  hypers = candidate_hypers(cfg, cfg.candidates, cfg.seed)
  rows = []
  for g in range(n_groups):
    for c, h in enumerate(hypers):
      rows.append(dict(h, group=g, seed=(group_seeds[g] * 1000 + c) % (2**31 - 1)))
  return Population(**{f.name: np.asarray([r[f.name] for r in rows],
                                          np.int32 if f.name in ("group", "seed") else np.float32)
                       for f in dataclasses.fields(Population)})


# ------------------------------------------------------------------ training
def _member_schedule(step, total, lr, warmup_frac):
  w = jnp.maximum(warmup_frac * total, 1e-6)
  warm = jnp.minimum(1.0, (step + 1) / w)
  decay = jnp.clip(1.0 - step / total, 0.0, 1.0)
  return lr * jnp.minimum(warm, decay)


def make_trainer(graphdef, layout: NodeLayout, cfg: PruneConfig, *, steps_per_call: int):
  """A jitted ``run(state, params, buffers, values, data, pop_arrays, start) -> (state, stats)``
  that advances every member ``steps_per_call`` steps (vmap over members, scan over steps)."""

  def member_step(carry, step, params, buffers, values, data, hp):
    tau, mu, nu = carry
    key = jax.random.fold_in(jax.random.key(hp["seed"]), step)
    idx = jax.random.randint(key, (cfg.batch_pairs,), 0, data["tokens"].shape[1])
    g = hp["group"]
    batch = {k: v[g, idx] for k, v in data.items()}

    def objective(tau):
      mask = heaviside_ste(tau, hp["heaviside_temp"])
      task = circuit_loss(graphdef, params, buffers, layout, mask, values, batch)
      return task + hp["k_coef"] * jnp.sum(mask), (task, jnp.sum(tau > 0))

    (_, (task, kept)), grad = jax.value_and_grad(objective, has_aux=True)(tau)
    norm = jnp.sqrt(jnp.sum(grad * grad))
    grad = grad * jnp.minimum(1.0, cfg.grad_clip / jnp.maximum(norm, 1e-12))
    b1, b2 = 0.9, 1.0 - hp["inv_beta2"]
    t = (step + 1).astype(jnp.float32)
    mu = b1 * mu + (1 - b1) * grad
    nu = b2 * nu + (1 - b2) * grad * grad
    update = (mu / (1 - b1 ** t)) / (jnp.sqrt(nu / (1 - b2 ** t)) + 1e-8)
    lr = _member_schedule(step, cfg.steps, hp["lr"], hp["warmup_frac"])
    tau = tau - lr * (update + hp["weight_decay"] * tau)
    return (jnp.clip(tau, -1.0, 1.0), mu, nu), (task, kept)

  def run(state, params, buffers, values, data, hp, start):
    def one(carry, step):
      step_all = jax.vmap(member_step, in_axes=(0, None, None, None, None, None, 0))
      return step_all(carry, step, params, buffers, values, data, hp)

    return jax.lax.scan(one, state, start + jnp.arange(steps_per_call))

  return jax.jit(run)


def init_tau(pop: Population, n_nodes: int) -> np.ndarray:
  out = np.empty((len(pop), n_nodes), np.float32)
  for i in range(len(pop)):
    rng = np.random.default_rng([int(pop.seed[i]), 11])
    out[i] = np.clip(pop.init_noise_bias[i] + pop.init_noise_scale[i] * rng.standard_normal(
        n_nodes), -1.0, 1.0)
  return out


def learn_masks(graphdef, params, buffers, layout: NodeLayout, values, data: dict,
                pop: Population, cfg: PruneConfig,
                progress: Callable[[str], None] = lambda _: None) -> np.ndarray:
  """τ of every member after ``cfg.steps`` steps: (M, n_nodes)."""
  chunk = min(cfg.chunk_steps, cfg.steps)
  run = make_trainer(graphdef, layout, cfg, steps_per_call=chunk)
  tau = jnp.asarray(init_tau(pop, layout.n_nodes))
  state = (tau, jnp.zeros_like(tau), jnp.zeros_like(tau))
  hp = {h: jnp.asarray(getattr(pop, h)) for h in Population.HYPERS}
  hp["group"], hp["seed"] = jnp.asarray(pop.group), jnp.asarray(pop.seed)
  data = {k: jnp.asarray(v) for k, v in data.items()}
  done = 0
  while done < cfg.steps:
    if cfg.steps - done < chunk:  # the last, shorter chunk
      chunk = cfg.steps - done
      run = make_trainer(graphdef, layout, cfg, steps_per_call=chunk)
    state, (task, kept) = run(state, params, buffers, values, data, hp, jnp.int32(done))
    done += chunk
    task, kept = np.asarray(task[-1]), np.asarray(kept[-1])
    progress(f"prune: step {done}/{cfg.steps} | task loss median {np.median(task):.3f} | kept "
             f"nodes median {int(np.median(kept))} of {layout.n_nodes}")
  return np.asarray(state[0])


# ------------------------------------------------------------------ discretization
def topk_masks(tau_MN, k_M) -> jax.Array:
  """Hard masks keeping each member's k highest-τ nodes (ties: lower index first)."""
  order = jnp.argsort(-tau_MN, axis=-1, stable=True)
  rank = jnp.argsort(order, axis=-1)
  return (rank < k_M[:, None]).astype(jnp.float32)


def make_evaluator(graphdef, layout: NodeLayout):
  """Jitted ``eval(params, buffers, values, masks_MN, batches) -> loss (M,)``, one task batch per
  member (``batches`` leaves have a leading M axis)."""

  def one(params, buffers, values, mask, batch):
    return circuit_loss(graphdef, params, buffers, layout, mask, values, batch)

  return jax.jit(jax.vmap(one, in_axes=(None, None, None, 0, 0)))


def bisect_k(evaluate: Callable, tau_MN: np.ndarray, target: float, n_nodes: int,
             rtol: float = 0.0) -> tuple:
  """Smallest k per member with held-out loss <= target (by bisection), and its loss.

  Members whose full mask (k = n_nodes) misses the target get k = -1. With ``rtol`` > 0 the search
  stops once hi - lo <= rtol * hi (the returned k reaches the target and is within that fraction of
  the smallest one the bisection would find).
  """
  M = tau_MN.shape[0]
  tau = jnp.asarray(tau_MN)
  full = np.asarray(evaluate(topk_masks(tau, jnp.full(M, n_nodes))))
  lo, hi = np.zeros(M, np.int64), np.full(M, n_nodes)
  for _ in range(int(math.ceil(math.log2(n_nodes + 1))) + 1):
    mid = (lo + hi) // 2
    loss = np.asarray(evaluate(topk_masks(tau, jnp.asarray(mid))))
    ok = loss <= target
    hi = np.where(ok, mid, hi)
    lo = np.where(ok, lo, mid + 1)
    if (hi - lo <= np.floor(rtol * hi)).all():
      break
  k = np.where(full <= target, hi, -1)
  final = np.asarray(evaluate(topk_masks(tau, jnp.asarray(np.maximum(k, 0)))))
  return k, final

