"""Who is trained: the population of mask learners, and how it adapts between rounds (PBT).

A *member* is one mask learner: a task group, a hyperparameter candidate, and a seed (its init
noise and batch order). Members are laid out task-major: ``candidates`` members per task.

**Initial population** (round 0): candidate 0 takes the paper's CARBS centres (Table 2); candidate
c > 0 draws every hyperparameter log-uniformly within ×10^±spread of its centre. A candidate's
draw depends only on (seed, c) and a member's seed only on its group's seed and c, so a task
pruned alone gets the same members as in a batch.

**Population-based training** (Jaderberg et al. 2017), per task, between rounds: members are
ranked by a fitness (smaller is better: the circuit size reaching the target loss on held-out
pairs); the worst ``pbt_fraction`` copy the state (τ and optimizer moments) of a random member of
the best ``pbt_fraction`` and perturb the hyperparameters that act during training by a factor
10^N(0, pbt_perturb²) (log-space exploration). Nothing is restarted, so a round of PBT costs
exactly the member-steps of the same round of a fixed random population; the only extra cost is
the fitness evaluation. The chosen member's *lineage* — whose state it continued and with which
hyperparameters and seed in each round — is what the shuffled-label control replays
(:mod:`sparsejax.circuits.prune_run`).
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from sparsejax.circuits.masks import HYPER_NAMES, Hypers

# Hyperparameters that act during training (the others only set the initial τ).
ADAPTED = ("k_coef", "lr", "weight_decay", "inv_beta2", "heaviside_temp")
_CAPS = {"inv_beta2": 0.5, "warmup_frac": 0.5}


@dataclasses.dataclass
class Population:
  """Per-member arrays (M,)."""

  hypers: Hypers  # float32 (M,) each
  group: np.ndarray  # int32: index into the stacked task groups the member trains on
  task: np.ndarray  # int32: the task a member works for (its rank among that task's members)
  candidate: np.ndarray  # int32: index within its task
  seed: np.ndarray  # int64: RNG seed (init noise and batch order)

  def __len__(self) -> int:
    return len(self.group)

  def member(self, i: int) -> dict:
    return {h: float(getattr(self.hypers, h)[i]) for h in HYPER_NAMES} | {
        "seed": int(self.seed[i])}

  def subset(self, idx) -> "Population":
    return Population(self.hypers.take(idx), self.group[idx], self.task[idx],
                      self.candidate[idx], self.seed[idx])

  def members_of(self, task: int) -> np.ndarray:
    return np.nonzero(self.task == task)[0]


def stable_seed(name: str) -> int:
  """A seed from a name, the same in every process (unlike ``hash``)."""
  return int.from_bytes(hashlib.sha256(name.encode()).digest()[:3], "little")


def candidate_hypers(centres: dict, n: int, spread: float, seed: int) -> list[dict]:
  """n hyperparameter sets: the centres, then draws log-uniform within ×10^±spread of them."""
  rng = np.random.default_rng([seed, 7])
  out = [dict(centres)]
  for _ in range(n - 1):
    draw = {h: c * 10 ** rng.uniform(-spread, spread) for h, c in centres.items()}
    out.append({h: min(v, _CAPS.get(h, np.inf)) for h, v in draw.items()})
  return out[:n]


def initial(centres: dict, candidates: int, spread: float, seed: int,
            task_seeds: list[int]) -> Population:
  """``candidates`` members per task (task t trains on group t); one seed per task."""
  hypers = candidate_hypers(centres, candidates, spread, seed)
  rows = []
  for t, task_seed in enumerate(task_seeds):
    for c, h in enumerate(hypers):
      rows.append(dict(h, group=t, task=t, candidate=c,
                       seed=(task_seed * 1000 + c) % (2**31 - 1)))
  col = lambda k, dt: np.asarray([r[k] for r in rows], dt)
  return Population(Hypers(**{h: col(h, np.float32) for h in HYPER_NAMES}),
                    col("group", np.int32), col("task", np.int32), col("candidate", np.int32),
                    col("seed", np.int64))


def exploit_explore(pop: Population, score: np.ndarray, round_index: int, *, fraction: float,
                    perturb: float, seed: int) -> tuple[Population, np.ndarray]:
  """One PBT step. ``score`` (M,): smaller is better. Returns the new population and ``source``
  (M,): the member whose state each member continues from."""
  rng = np.random.default_rng([seed, 13, round_index])
  M = len(pop)
  source = np.arange(M)
  hypers = {h: np.array(getattr(pop.hypers, h)) for h in HYPER_NAMES}
  new_seed = pop.seed.copy()
  for t in np.unique(pop.task):
    real = pop.members_of(int(t))
    n_swap = min(len(real) // 2, max(1, int(round(fraction * len(real))))) if len(real) > 1 else 0
    if not n_swap:
      continue
    order = real[np.lexsort((real, score[real]))]  # best first; ties: lower index first
    winners, losers = order[:n_swap], order[-n_swap:]
    for loser in losers:
      src = int(rng.choice(winners))
      source[loser] = src
      for h in HYPER_NAMES:
        factor = 10 ** rng.normal(0.0, perturb) if h in ADAPTED else 1.0
        hypers[h][loser] = min(hypers[h][src] * factor, _CAPS.get(h, np.inf))
      new_seed[loser] = (int(pop.seed[src]) * 31 + 1009 * (round_index + 1) + loser) % (2**31 - 1)
  out = Population(Hypers(**{h: v.astype(np.float32) for h, v in hypers.items()}), pop.group,
                   pop.task, pop.candidate, new_seed)
  return out, source
