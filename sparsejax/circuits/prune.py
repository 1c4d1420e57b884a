"""Every setting of circuit pruning (:class:`PruneConfig`); the pipeline is ``prune_run.py``.

Where each part lives (``sparsejax/circuits/``):

  masks.py         node layout, node means, Heaviside + surrogate, the task loss, one optax step
  evaluate.py      TaskData (a task's pairs as a pytree), CircuitModel (jitted vmapped margins and
                   mask gradients of circuits), EvalQueue (many circuits in a few compiled calls)
  population.py    the population of mask learners; population-based training between rounds
  search.py        the vmapped training scan, the memory plan (calls), rounds; Searcher: the
                   search over any units (Problem → Found), its control replay, the bisection
  bisection.py     the smallest top-k circuit that reaches the target loss
  cleanup.py       greedy removal of units a circuit does not need
  edges.py         edges as arrays; edge ablation as a parameter transform
  edge_pruning.py  learning edge masks: the essential edges
  calibration.py   the logit scale + shift fit
  checks.py        the numbers that say whether to trust a circuit (controls), one function each
  report.py        the summary table and its JSON
  prune_run.py     the pipeline: tasks → search → bisection → clean-up → edges → checks;
                   ``prune(run, tasks, preset=...)``, the one-call entry point
  graph.py         the Circuit JSON; analysis.py, viewer.py: the HTML viewer
"""

from __future__ import annotations

import dataclasses

from sparsejax.circuits.masks import HYPER_NAMES
from sparsejax.utils.errors import ConfigError

SEARCHES = ("pbt", "random")
LOSSES = ("raw", "calibrated")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PruneConfig:
  """Pruning settings. Hyperparameter centres are the paper's CARBS centres (Table 2)."""

  # --- tasks and the target
  train_pairs: int = 256  # pairs masks are learned on
  val_pairs: int = 64  # held-out pairs for the search's fitness, bisection and clean-up
  test_pairs: int = 128  # held-out pairs every reported loss is measured on
  target_loss: float = 0.15  # the circuit must reach this task loss (on val pairs)
  ablation: str = "mean"  # "mean" (pretraining mean) or "zero"
  mean_tokens: int = 65536  # held-out pretraining tokens the means are computed on
  freeze_final_norm: bool = False  # ln_f uses the unpruned model's normaliser (Drori critique)
  seed: int = 0  # task pairs, hyperparameter draws, initial τ and batch order (seeds: + 1, + 2)
  # --- the search: a population per task, trained in rounds (budget = candidates × steps ×
  # batch_pairs member-pair-steps per task; rounds only add the fitness evaluations between them)
  search: str = "pbt"  # "pbt": population-based training between rounds; "random": fixed draws
  rounds: int = 4  # rounds (pbt: the population adapts after each but the last)
  candidates: int = 4  # members per task
  steps: int = 200  # mask-learning steps per member (all rounds)
  batch_pairs: int = 8  # task pairs per step (2 sequences each)
  pbt_fraction: float = 0.25  # per task, the worst fraction copies the best fraction each round
  pbt_perturb: float = 0.2  # log10 std of the hyperparameter perturbation after a copy
  fitness_rtol: float = 0.1  # bisection tolerance of the between-round fitness (circuit size)
  fitness_pairs: int = 0  # val pairs the between-round fitness uses (0: all; fewer is cheaper)
  # Grid sizes tried before the fitness bisection (0: start from each member's units with τ > 0
  # and widen ×4 until the target is bracketed, usually fewer evaluations).
  fitness_grid: int = 0
  # Centres; candidate 0 takes them, the others draw each × 10^U(-spread, spread).
  k_coef: float = 1e-4
  lr: float = 3e-3
  init_noise_scale: float = 1e-2
  init_noise_bias: float = 1e-1
  weight_decay: float = 1e-3
  inv_beta2: float = 5e-2
  warmup_frac: float = 5e-2
  heaviside_temp: float = 1.0
  spread: float = 0.5
  grad_clip: float = 1.0  # global-norm clip of each member's mask gradient (optax)
  # --- discretization
  bisect_on: str = "raw"  # loss the bisection and clean-up hold at the target: "raw"|"calibrated"
  calibrate: bool = True  # also report the logit-calibrated loss (raw loss is always reported)
  bisect_rtol: float = 0.0  # stop bisecting once the size is known to within this fraction
  # Before bisecting, try this many sizes spaced geometrically from 1 to all nodes and bisect
  # below the smallest that reaches the target (loss is not monotone in the size).
  bisect_grid: int = 8
  # --- clean-up: greedy single-node removals while the circuit stays at the target
  cleanup: bool = True
  cleanup_batch: int = 16  # exact single-removal candidates per circuit per round
  cleanup_rounds: int = 10  # at most this many rounds
  cleanup_exhaustive: bool = True  # stop only when no single removal passes (else: budget)
  # --- edge pruning: essential edges among the paper-comparable ones (the same search over edge
  # masks inside each node circuit; the other centres are the node search's)
  edges: bool = True
  edge_candidates: int = 2  # members per task
  edge_rounds: int = 2  # rounds (pbt: adapts between them)
  edge_steps: int = 200  # edge-mask learning steps per member (all rounds)
  edge_lr: float = 3e-2  # learning-rate centre
  edge_k_coef: float = 1e-3  # size-penalty centre (per edge)
  edge_cleanup: bool = True  # greedy single-edge removals after the bisection
  # A node circuit with more edges than this is not edge-pruned (its essential edges are all of
  # them): every circuit's edge table is padded to the largest, so one huge circuit would make
  # every edge evaluation pay for it.
  edge_max_edges: int = 20000
  # --- controls
  random_circuits: int = 5  # random circuits of the same size per site / slot (control)
  control: bool = True  # also prune a shuffled-label copy of each task (control)
  # --- the faithfulness suite (sparsejax.circuits.faithfulness), on every circuit
  faithfulness: bool = True  # frozen norms, zero nodes, ood, node repurposing, attention
  ood_pairs: int = 64  # held-out-template (ood split) pairs per task (0: no ood check)
  repurposed_below: float = 0.5  # kept nodes correlating less with the full model are flagged
  attention_diverges_above: float = 0.1  # kept heads with a larger JS divergence (bits) flagged
  # The whole pruning repeated under seeds seed + 1 .. seed + seeds - 1 (other pairs, draws and
  # initial τ): size spread and node Jaccard between seeds. 1: off (each seed costs one more
  # pruning); the "default" and "paper" presets use 3.
  seeds: int = 1
  # --- the memory plan
  chunk_steps: int = 25  # steps per compiled scan chunk (progress is reported between chunks)
  # Members trained in one vmapped call; 0 plans it from the memory budget (all members when they
  # fit). Members are sorted by sequence length, so a call also pads less.
  members_per_call: int = 0
  # 0: 75% of the accelerator's memory; on a CPU (no limit reported) nothing is planned unless
  # this or members_per_call is set.
  memory_budget_gib: float = 0.0
  # One call per needed sequence length (multiples of LENGTH_BUCKET; lengths with few members
  # merged into the next): little padding beyond a task's own length, at one compile and one call
  # per length. Pays on a CPU, where a call costs its FLOPs; on a GPU fewer, wider calls win.
  group_by_length: bool = False

  def __post_init__(self):
    for name in ("steps", "batch_pairs", "candidates", "train_pairs", "val_pairs", "test_pairs",
                 "mean_tokens", "chunk_steps", "rounds", "cleanup_batch", "edge_steps",
                 "edge_candidates", "edge_rounds", "edge_max_edges"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
    for steps, rounds in (("steps", "rounds"), ("edge_steps", "edge_rounds")):
      if getattr(self, steps) % getattr(self, rounds):
        raise ValueError(f"{steps}: {getattr(self, steps)} must be a multiple of {rounds} "
                         f"({getattr(self, rounds)}), so every round runs the same compiled scan")
    if self.ablation not in ("mean", "zero"):
      raise ValueError(f"ablation: must be 'mean' or 'zero', got {self.ablation!r}")
    if self.search not in SEARCHES:
      raise ValueError(f"search: must be one of {SEARCHES}, got {self.search!r}")
    if self.bisect_on not in LOSSES:
      raise ValueError(f"bisect_on: must be one of {LOSSES}, got {self.bisect_on!r}")
    if not self.target_loss > 0:
      raise ValueError(f"target_loss: must be > 0, got {self.target_loss}")
    if not 0 < self.pbt_fraction <= 0.5:
      raise ValueError(f"pbt_fraction: must be in (0, 0.5], got {self.pbt_fraction}")
    if self.random_circuits < 0 or self.cleanup_rounds < 0 or self.fitness_pairs < 0:
      raise ValueError("random_circuits, cleanup_rounds and fitness_pairs: must be >= 0")
    if self.seeds < 1 or self.ood_pairs < 0:
      raise ValueError(f"seeds: must be >= 1 and ood_pairs >= 0, got {self.seeds}, "
                       f"{self.ood_pairs}")
    if self.bisect_grid < 0 or self.fitness_grid < 0:
      raise ValueError("bisect_grid and fitness_grid: must be >= 0")
    if self.members_per_call < 0 or self.memory_budget_gib < 0:
      raise ValueError("members_per_call and memory_budget_gib: must be >= 0 (0 = automatic)")

  @property
  def centres(self) -> dict:
    return {h: getattr(self, h) for h in HYPER_NAMES}

  def member_steps(self) -> int:
    """Compute budget per task: members × steps × pairs per step."""
    return self.candidates * self.steps * self.batch_pairs

  @classmethod
  def from_dict(cls, values: dict) -> "PruneConfig":
    """From a summary's ``config`` (keys this version does not know are dropped)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


# Named budgets (``preset``): the library's; experiments/configs/prune.py only selects one.
PRESETS: dict[str, dict] = {
    "default": dict(seeds=3),
    # The README main job, sized for 2 CPU cores in a few minutes: 2 candidates per task in 2
    # rounds of 50 larger steps (τ must cross 0 from the init bias 0.1 within the budget, so the
    # learning-rate centre is 10x the paper's, and the size penalty 3x), a coarse between-round
    # fitness, one edge-mask learner per circuit, one node clean-up round of 8 candidates. val_pairs
    # == test_pairs and fitness_pairs = 0: every evaluation has one batch size. On 2 cores a
    # compile costs as much as hundreds of member-steps, so training runs as one call per stage
    # (group_by_length off) and evaluations trim tokens per chunk.
    "quick": dict(steps=100, rounds=2, candidates=2, train_pairs=96, val_pairs=48, test_pairs=48,
                  batch_pairs=4, mean_tokens=16384, random_circuits=2, chunk_steps=50, lr=3e-2,
                  k_coef=3e-4, fitness_rtol=0.15, bisect_grid=6, bisect_rtol=0.05,
                  edge_candidates=1, edge_rounds=1, edge_steps=100, edge_max_edges=8192,
                  cleanup_rounds=1, cleanup_batch=8, cleanup_exhaustive=False,
                  # edge clean-up off: on the main job's model its one round cost 49 s of the
                  # 608 s job for 4 % fewer essential edges (median 469 -> 450)
                  edge_cleanup=False,
                  # the faithfulness suite without seed variance: two more prunings would take
                  # the main job past its 10 minutes
                  ood_pairs=48, seeds=1),
    # The paper's budget (paper-notes §3, prune_v4: 768 CARBS trials, 64 pairs per step, 48
    # epochs): 256 members per task in 8 rounds of PBT, 1536 steps of 64 pairs (48 epochs of 2048
    # training pairs), the edge search at a quarter of that, exhaustive clean-up. For an
    # accelerator: the memory plan splits the members into as few vmapped calls as fit.
    "paper": dict(steps=1536, rounds=8, candidates=256, batch_pairs=64, train_pairs=2048,
                  val_pairs=256, test_pairs=512, chunk_steps=64, fitness_pairs=64,
                  edge_candidates=64, edge_rounds=4, edge_steps=768, cleanup_rounds=500,
                  cleanup_batch=64, cleanup_exhaustive=True, random_circuits=10, seeds=3),
}


def preset(name: str = "default", **overrides) -> PruneConfig:
  """The :data:`PRESETS` budget ``name`` ("default", "quick" or "paper") with ``overrides``
  (PruneConfig fields) on top; a bad name, field or value is a :class:`ConfigError`."""
  if name not in PRESETS:
    raise ConfigError(f"preset: unknown {name!r}; valid: {', '.join(PRESETS)}")
  names = {f.name for f in dataclasses.fields(PruneConfig)}
  unknown = sorted(set(overrides) - names)
  if unknown:
    raise ConfigError(f"PruneConfig has no field {', '.join(unknown)}")
  try:
    return PruneConfig(**(PRESETS[name] | overrides))
  except (TypeError, ValueError) as e:
    raise ConfigError(f"PruneConfig: {e}") from None
