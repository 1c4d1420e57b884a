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
* **Discretize**: nodes ranked by τ; a geometric grid of sizes, then bisection below the smallest
  grid size that passes, finds the smallest top-k mask whose held-out task loss is at or below the
  target (loss is assumed monotone in k between grid points).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.model import sites as sites_lib
from sparsejax.tasks.evaluation import pair_loss
from sparsejax.model.gpt import merge, with_config
from sparsejax.model.config import GPTConfig
from sparsejax.model.sites import PRUNE_SITES



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
  # Members trained in one vmapped call; 0 plans it from the memory budget (all members when they
  # fit). Members are sorted by sequence length, so a call also pads less.
  members_per_call: int = 0
  # 0: 75% of the accelerator's memory; on a CPU (no limit reported) nothing is planned unless
  # this or members_per_call is set.
  memory_budget_gib: float = 0.0
  # One call per needed sequence length (multiples of LENGTH_BUCKET): no padding beyond a task's
  # own length, at one compile and one call per length. Pays on a CPU, where a call costs its
  # FLOPs; on a GPU fewer, wider calls usually win.
  group_by_length: bool = False
  bisect_rtol: float = 0.0  # stop bisecting once the size is known to within this fraction
  # Before bisecting, try this many circuit sizes spaced geometrically from 1 to all nodes and
  # bisect below the smallest that reaches the target (0: bisect over [0, all nodes]). Loss is not
  # monotone in k: plain bisection can settle on a large circuit when a midpoint fails.
  bisect_grid: int = 8

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
    if self.bisect_grid < 0:
      raise ValueError(f"bisect_grid: must be >= 0, got {self.bisect_grid}")
    if self.members_per_call < 0 or self.memory_budget_gib < 0:
      raise ValueError("members_per_call and memory_budget_gib: must be >= 0 (0 = automatic)")


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
    model = merge(graphdef, params, buffers)
    _, cache = model.run_with_cache(tokens, layout.sites)
    return jnp.concatenate([cache[s].astype(jnp.float32).sum(axis=(0, 1)) for s in layout.sites])

  total, count = np.zeros(layout.n_nodes, np.float64), 0
  for b in token_batches:
    total += np.asarray(sums(jnp.asarray(b)), np.float64)
    count += b.shape[0] * b.shape[1]
  return (total / count).astype(np.float32)


LENGTH_BUCKET = 16


def needed_length(last, cap: int) -> int:
  """Tokens a batch of sequences needs: later positions cannot change the scored ones' logits
  (the model is causal and position-wise elsewhere). Rounded up to a multiple of LENGTH_BUCKET
  (few distinct shapes, so few compiles) and at most ``cap``."""
  n = int(np.max(last)) + 1
  return min(cap, -(-n // LENGTH_BUCKET) * LENGTH_BUCKET)


def trim_tokens(arrays: dict, length: int) -> dict:
  """Task arrays with tokens cut to ``length`` positions (see :func:`needed_length`)."""
  return dict(arrays, tokens=arrays["tokens"][..., :length])


# ------------------------------------------------------------------ masks and the objective
def heaviside_ste(tau, temp):
  """H(τ) forward; d/dτ = σ'(τ/T)/T backward."""
  soft = jax.nn.sigmoid(tau / temp)
  hard = (tau > 0).astype(tau.dtype)
  return soft + jax.lax.stop_gradient(hard - soft)


def circuit_logits(graphdef, params, buffers, layout: NodeLayout, mask, values, tokens_PST,
                   last_PS, final_rms_PS=None):
  """Last-position logits (P, S, V) with nodes off where ``mask`` is 0 (set to ``values``)."""
  model = merge(graphdef, params, buffers)
  P, S, T = tokens_PST.shape
  logits = model(tokens_PST.reshape(P * S, T), interventions=layout.interventions(mask, values),
                 positions_B=last_PS.reshape(P * S),
                 final_rms_B=None if final_rms_PS is None else final_rms_PS.reshape(P * S))
  return logits.reshape(P, S, -1)


def circuit_loss(graphdef, params, buffers, layout, mask, values, batch: dict):
  """Mean task loss of a (hard or soft) mask on a dict batch (tokens/last/correct/alt/rms)."""
  logits = circuit_logits(graphdef, params, buffers, layout, mask, values, batch["tokens"],
                          batch["last"], batch.get("rms"))
  loss, _ = pair_loss(logits, batch["correct"], batch["alt"])
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

  def subset(self, members) -> "Population":
    return Population(**{f.name: getattr(self, f.name)[members]
                         for f in dataclasses.fields(self)})

  def arrays(self) -> dict:
    """What the trainer takes: every hyperparameter, the group and the seed, as device arrays."""
    return {f.name: jnp.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)}


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


def init_state(pop: Population, n_nodes: int):
  """The trainer's starting state: (τ, Adam first moment, Adam second moment)."""
  tau = jnp.asarray(init_tau(pop, n_nodes))
  return tau, jnp.zeros_like(tau), jnp.zeros_like(tau)


def _memory_budget(cfg: PruneConfig) -> float | None:
  if cfg.memory_budget_gib:
    return cfg.memory_budget_gib * 2**30
  stats = jax.devices()[0].memory_stats() or {}
  return 0.75 * stats["bytes_limit"] if "bytes_limit" in stats else None


def _member_bytes(run, args_one) -> int | None:
  """XLA's memory estimate of one call (arguments + outputs + temporaries), if the backend has
  one."""
  try:
    m = run.lower(*args_one).compile().memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
  except Exception:
    return None


def plan_members_per_call(run, args_one, n_members: int, cfg: PruneConfig) -> tuple[int, str]:
  """How many members one vmapped call trains: ``cfg.members_per_call``, or as many as fit the
  memory budget by XLA's estimate for one member (arguments + outputs + temporaries, an upper
  bound per member: the frozen model is counted for each). Returns (count, how it was chosen)."""
  if cfg.members_per_call:
    return min(cfg.members_per_call, n_members), "members_per_call"
  budget = _memory_budget(cfg)
  if budget is None:
    return n_members, "no memory limit reported by the backend"
  one = _member_bytes(run, args_one)
  if one is None:  # the backend gives no estimate: one call, as configured
    return n_members, "no memory estimate on this backend"
  fit = max(1, int(budget // max(one, 1)))
  return min(fit, n_members), (f"{one / 2**20:.0f} MiB per member (XLA estimate), budget "
                               f"{budget / 2**30:.1f} GiB")


def learn_masks(graphdef, params, buffers, layout: NodeLayout, values, data: dict,
                pop: Population, cfg: PruneConfig,
                progress: Callable[[str], None] = lambda _: None) -> np.ndarray:
  """τ of every member after ``cfg.steps`` steps: (M, n_nodes).

  Members train in vmapped calls of at most :func:`plan_members_per_call` members (and with
  ``group_by_length`` one length per call), sorted by their task's sequence length so each call's
  tokens are cut to what its tasks need. A member's result does not depend on which call it ran in
  (its batches and init depend only on its seed).
  """
  chunk = min(cfg.chunk_steps, cfg.steps)
  trainers = {}

  def trainer(steps):
    if steps not in trainers:
      trainers[steps] = make_trainer(graphdef, layout, cfg, steps_per_call=steps)
    return trainers[steps]

  cap = data["tokens"].shape[-1]
  need = np.asarray([needed_length(data["last"][g], cap) for g in range(len(data["last"]))])
  order = np.argsort(need[pop.group], kind="stable")

  def call_inputs(members):
    groups, group = np.unique(pop.group[members], return_inverse=True)
    sub = pop.subset(members)
    sub.group = group.astype(np.int32)
    d = trim_tokens({k: v[groups] for k, v in data.items()}, int(need[groups].max()))
    return sub, {k: jnp.asarray(v) for k, v in d.items()}

  sub, d = call_inputs(order[-1:])  # the longest member: the largest per-member footprint
  args_one = (init_state(sub, layout.n_nodes), params, buffers, values, d, sub.arrays(),
              jnp.int32(0))
  # --- No rematerialisation when memory allows (throughput, sparsejax.model.gpt). Mask learning
  # differentiates through activations only, so remat inherited from training adds ~49 % FLOPs:
  # drop it unless one member then exceeds the memory budget by XLA's estimate.
  if merge(graphdef, params, buffers).config.grad_checkpointing:
    graphdef, remat = with_config(graphdef, params, buffers, grad_checkpointing=False), graphdef
    budget, one = _memory_budget(cfg), _member_bytes(trainer(chunk), args_one)
    if budget is not None and one is not None and one > budget:
      graphdef = remat
      trainers.clear()
  # ---
  per_call, why = len(pop), "one call"
  if len(pop) > 1:
    per_call, why = plan_members_per_call(trainer(chunk), args_one, len(pop), cfg)
  split = lambda ids: [ids[i:i + per_call] for i in range(0, len(ids), per_call)]
  if cfg.group_by_length:
    calls = [c for n in np.unique(need) for c in split(order[need[pop.group[order]] == n])]
  else:
    calls = split(order)
  if len(calls) > 1:
    progress(f"prune: {len(pop)} members in {len(calls)} vmapped calls of up to {per_call} "
             f"({why})")
  tau_out = np.empty((len(pop), layout.n_nodes), np.float32)
  for c, members in enumerate(calls):
    sub, d = call_inputs(members)
    state, hp = init_state(sub, layout.n_nodes), sub.arrays()
    where = f" | call {c + 1}/{len(calls)}, {len(members)} members" if len(calls) > 1 else ""
    done = 0
    while done < cfg.steps:
      steps = min(chunk, cfg.steps - done)
      state, (task, kept) = trainer(steps)(state, params, buffers, values, d, hp,
                                          jnp.int32(done))
      done += steps
      task, kept = np.asarray(task[-1]), np.asarray(kept[-1])
      progress(f"prune: step {done}/{cfg.steps}{where} | task loss median {np.median(task):.3f}"
               f" | kept nodes median {int(np.median(kept))} of {layout.n_nodes}")
    tau_out[members] = np.asarray(state[0])
  return tau_out


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
             rtol: float = 0.0, grid: int = 0) -> tuple:
  """Smallest k per member with held-out loss <= target, and its loss.

  With ``grid`` > 0, sizes spaced geometrically from 1 to ``n_nodes`` are tried first, and the
  bisection runs between the largest one below the smallest passing size and that size; otherwise
  over [0, n_nodes]. Members whose full mask (k = n_nodes) misses the target get k = -1. With
  ``rtol`` > 0 the search stops once hi - lo <= rtol * hi (the returned k reaches the target and is
  within that fraction of the smallest one the bisection would find). ``evaluate(masks, members)``
  maps masks (S, N) of the members with indices ``members`` (S,) to their losses (S,); each round
  evaluates only the members still searching.
  """
  M = tau_MN.shape[0]
  tau = jnp.asarray(tau_MN)

  def passes(k_M, members):
    ok = np.zeros(M, bool)
    if len(members):  # masks of every member (one shape, one compile), evaluated for some
      masks = np.asarray(topk_masks(tau, jnp.asarray(k_M)))[members]
      ok[members] = np.asarray(evaluate(masks, members)) <= target
    return ok

  everyone = np.arange(M)
  hi = np.full(M, n_nodes)
  reaches = passes(hi, everyone)
  lo = np.where(reaches, 0, n_nodes)  # a member whose full mask fails is not searched
  if grid:
    found = ~reaches
    for k_ in np.unique(np.round(np.geomspace(1, n_nodes, grid + 1)).astype(np.int64))[:-1]:
      ok = passes(np.full(M, k_), np.nonzero(~found)[0])
      hi = np.where(ok, k_, hi)
      found |= ok
      lo = np.where(found, lo, k_ + 1)
      if found.all():
        break
  for _ in range(int(math.ceil(math.log2(n_nodes + 1))) + 1):
    searching = hi - lo > np.floor(rtol * hi)
    if not searching.any():
      break
    mid = (lo + hi) // 2
    ok = passes(mid, np.nonzero(searching)[0])
    hi = np.where(ok, mid, hi)
    lo = np.where(searching & ~ok, mid + 1, lo)
  k = np.where(reaches, hi, -1)
  final = topk_masks(tau, jnp.asarray(np.maximum(k, 0)))
  return k, np.asarray(evaluate(final, everyone))
