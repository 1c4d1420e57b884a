"""Automated clean-up: the paper's hand-cleaning of circuits (~1 researcher-day each), by machine.

After discretization a circuit still holds units (nodes, or edges) that it does not need: the
learned ranking is only approximately right at the boundary. Clean-up removes units one at a time
while the circuit's held-out loss stays at or below the target, and stops when no single removal
passes. Trying every unit every time costs one evaluation per unit per removal; instead, per round
and for every circuit at once:

1. **Rank** the kept units by a first-order estimate of what removing each costs,
   Δ_i ≈ L(m − e_i) − L(m) ≈ −∂L/∂m_i (one vmapped gradient evaluation for all circuits).
2. **Bulk** (first round only, optional): bisect the largest j such that removing the j
   lowest-ranked units together still passes (log₂ n evaluations).
3. **Exact singles**: evaluate removing each of the next ``batch`` ranked candidates alone, all
   circuits' candidates in one vmapped call. Candidates that fail are set aside.
4. **Accept** greedily: the passing candidates sorted by their loss are removed as the longest
   prefix (tried at lengths 1, 2, 4, …, all, in one call) that still passes together.

A circuit is done when every kept unit has been tried since its last removal and none passed (with
``exhaustive``, units set aside are retried after a removal, so it stops exactly when no single
removal passes), or after ``max_rounds``. The result reports whether each circuit converged.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

Evaluate = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (masks (S, N), members (S,)) -> loss
Estimate = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (masks (S, N), members) -> Δ (S, N)


@dataclasses.dataclass
class CleanupResult:
  masks: np.ndarray  # (M, N) cleaned hard masks
  losses: np.ndarray  # (M,) held-out loss of each cleaned mask
  removed: np.ndarray  # (M,) units removed
  converged: np.ndarray  # (M,) bool: no single removal of a kept unit passes
  rounds: int  # rounds run
  evaluations: int  # circuits evaluated (singles, prefixes, bulk), all members together


def greedy_cleanup(evaluate: Evaluate, estimate: Estimate, masks_MN: np.ndarray, target: float,
                   *, batch: int = 16, max_rounds: int = 50, exhaustive: bool = True,
                   bulk: bool = True, removable_MN: np.ndarray | None = None,
                   progress: Callable[[str], None] = lambda _: None,
                   label: str = "clean-up") -> CleanupResult:
  """Greedy removal (module doc). Members whose starting mask misses the target are left as is.
  Only units where ``removable_MN`` is true are candidates (default: every kept unit)."""
  masks = np.array(masks_MN, np.float32)
  M, N = masks.shape
  fixed = np.zeros((M, N), bool) if removable_MN is None else ~np.asarray(removable_MN, bool)
  everyone = np.arange(M)
  losses = np.asarray(evaluate(masks, everyone), np.float64)
  evals = M
  active = losses <= target
  start_kept = masks.sum(1)
  tried = fixed.copy()  # failed alone since the member's last removal (or not removable)
  changed = np.zeros(M, bool)  # removed something since ``tried`` was last cleared
  converged = np.zeros(M, bool)
  rounds = 0
  for rounds in range(1, max_rounds + 1):
    ids = np.nonzero(active)[0]
    if not len(ids):
      rounds -= 1
      break
    est = np.asarray(estimate(masks[ids], ids), np.float64)
    if bulk and rounds == 1:
      evals += _bulk(evaluate, masks, losses, ids, est, target, fixed)
      est = np.asarray(estimate(masks[ids], ids), np.float64)
    # Exact single removals of each member's next candidates.
    cand, rows = [], []
    for r, i in enumerate(ids):
      free = np.nonzero((masks[i] > 0) & ~tried[i])[0]
      if not len(free) and exhaustive and changed[i]:
        tried[i], changed[i] = fixed[i], False
        free = np.nonzero((masks[i] > 0) & ~tried[i])[0]
      if not len(free):
        active[i], converged[i] = False, not changed[i]
        continue
      pick = free[np.argsort(est[r, free], kind="stable")[:batch]]
      cand.append((i, pick))
      for u in pick:
        m = masks[i].copy()
        m[u] = 0.0
        rows.append((i, m))
    if not rows:
      break
    single = np.asarray(evaluate(np.stack([m for _, m in rows]), np.asarray([i for i, _ in rows])))
    evals += len(rows)
    prefix_rows, plans, at = [], [], 0
    for i, pick in cand:
      loss_i = single[at:at + len(pick)]
      at += len(pick)
      ok = loss_i <= target
      tried[i, pick[~ok]] = True
      good = pick[ok][np.argsort(loss_i[ok], kind="stable")]
      if not len(good):
        continue
      sizes = sorted({min(len(good), 2 ** j) for j in range(int(np.ceil(np.log2(len(good)))) + 1)})
      plans.append((i, good, sizes, len(prefix_rows), float(loss_i[ok].min())))
      for s in sizes[1:]:
        m = masks[i].copy()
        m[good[:s]] = 0.0
        prefix_rows.append((i, m))
    pre = (np.asarray(evaluate(np.stack([m for _, m in prefix_rows]),
                               np.asarray([i for i, _ in prefix_rows])))
           if prefix_rows else np.zeros(0))
    evals += len(prefix_rows)
    for i, good, sizes, at, best_single in plans:
      take, loss = 1, best_single
      for s, l in zip(sizes[1:], pre[at:at + len(sizes) - 1]):
        if l <= target:
          take, loss = s, float(l)
      masks[i, good[:take]] = 0.0
      losses[i] = loss
      changed[i] = True
    kept = masks.sum(1)
    progress(f"{label}: round {rounds} | {int(active.sum())} circuits still shrinking | kept "
             f"median {int(np.median(kept))} (from {int(np.median(start_kept))}) | "
             f"{evals} evaluations")
  return CleanupResult(masks, losses, (start_kept - masks.sum(1)).astype(np.int64),
                       converged, rounds, evals)


def _bulk(evaluate: Evaluate, masks, losses, ids, est, target, fixed) -> int:
  """Removes each member's largest prefix of lowest-estimate units that passes (bisection);
  updates ``masks`` and ``losses`` in place, returns the evaluations made."""
  order = []
  for r, i in enumerate(ids):
    kept = np.nonzero((masks[i] > 0) & ~fixed[i])[0]
    order.append(kept[np.argsort(est[r, kept], kind="stable")])
  lo = np.zeros(len(ids), np.int64)  # removing lo units passes
  hi = np.asarray([len(o) for o in order], np.int64) + 1  # removing hi units fails (or > all)
  evals = 0
  while True:
    todo = np.nonzero(hi - lo > 1)[0]
    if not len(todo):
      break
    mid = (lo + hi) // 2
    rows = []
    for r in todo:
      m = masks[ids[r]].copy()
      m[order[r][:mid[r]]] = 0.0
      rows.append(m)
    loss = np.asarray(evaluate(np.stack(rows), ids[todo]))
    evals += len(todo)
    for r, l in zip(todo, loss):
      if l <= target:
        lo[r] = mid[r]
        losses[ids[r]] = l
      else:
        hi[r] = mid[r]
  for r, i in enumerate(ids):
    masks[i, order[r][:lo[r]]] = 0.0
  return evals
