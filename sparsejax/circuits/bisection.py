"""Discretizing learned masks: the smallest top-k set of units that reaches the target loss.

Units (nodes, or edges) are ranked by their learned τ; a circuit of size k keeps the k highest.
:func:`bisect_k` finds per member the smallest k whose held-out loss is at or below the target:
a geometric grid of sizes first, then bisection below the smallest grid size that passes (loss is
not monotone in k: plain bisection over [0, n] can settle on a large circuit when a midpoint
fails). Every round evaluates all members still searching in one call of ``evaluate``, so a whole
population is discretized in a few vmapped evaluations. Which loss is used (raw, or after the
logit calibration) is the caller's ``evaluate``.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

Evaluate = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (masks (S, N), members (S,)) -> loss


def topk_masks(tau_MN, k_M, valid_MN=None) -> np.ndarray:
  """Hard masks (float32) keeping each member's k highest-τ units (ties: lower index first);
  units where ``valid`` is 0 are never kept."""
  tau = np.asarray(tau_MN, np.float32)
  if valid_MN is not None:
    tau = np.where(np.asarray(valid_MN) > 0, tau, -np.inf)
  order = np.argsort(-tau, axis=-1, kind="stable")
  rank = np.empty_like(order)
  np.put_along_axis(rank, order, np.arange(tau.shape[-1])[None].repeat(tau.shape[0], 0), -1)
  return (rank < np.asarray(k_M)[:, None]).astype(np.float32)


def grid_sizes(n: int, grid: int) -> list[int]:
  """``grid`` sizes spaced geometrically from 1 up to (not including) n, without repeats."""
  return sorted({int(round(n ** (j / grid))) for j in range(grid)}) if grid and n > 1 else []


def bisect_k(evaluate: Evaluate, tau_MN: np.ndarray, target: float, n_units, *,
             rtol: float = 0.0, grid: int = 0, valid_MN=None, start=None,
             full_loss=None) -> tuple[np.ndarray, np.ndarray]:
  """Smallest k per member with held-out loss <= target, and its loss.

  ``n_units`` is the number of rankable units (an int, or (M,) when members differ; units beyond
  it must be invalid). With ``grid`` > 0, :func:`grid_sizes` are tried first and the bisection
  runs below the smallest passing one; otherwise over [0, n]. Members whose full set misses the
  target get k = -1. With ``rtol`` > 0 the search stops once hi - lo <= rtol * hi (the returned
  k reaches the target and is within that fraction of the smallest one the bisection would find).
  ``evaluate(masks, members)`` maps masks (S, N) of the members ``members`` (S,) to losses (S,).
  The returned loss is the one measured at the returned k (at the full set for k = -1): no
  evaluation is repeated.

  Cheaper, for a coarse size (the search's fitness): ``full_loss`` (M,) is the known loss of the
  full set (not evaluated again), and ``start`` (M,) a guess of each member's size (e.g. its
  units with τ > 0) that replaces the grid: the guess is evaluated, then sizes ×4 apart from it
  until the target's crossing is bracketed.
  """
  M = tau_MN.shape[0]
  n = np.broadcast_to(np.asarray(n_units, np.int64), (M,)).copy()
  best_loss = np.full(M, np.inf)  # loss at each member's current hi (once evaluated)

  def passes(k_M, members):
    ok = np.zeros(M, bool)
    if len(members):
      masks = topk_masks(tau_MN[members], k_M[members],
                         None if valid_MN is None else np.asarray(valid_MN)[members])
      loss = np.asarray(evaluate(masks, members), np.float64)
      ok[members] = loss <= target
      best_loss[members] = np.where(ok[members] | ~np.isfinite(best_loss[members]), loss,
                                    best_loss[members])
    return ok

  everyone = np.arange(M)
  hi = n.copy()
  if full_loss is None:
    reaches = passes(hi, everyone)
  else:
    best_loss[:] = full_loss
    reaches = np.asarray(full_loss) <= target
  lo = np.where(reaches, 0, n)  # a member whose full set fails is not searched
  if start is not None:
    guess = np.clip(np.asarray(start, np.int64), 1, np.maximum(n, 1))
    todo = np.nonzero(reaches & (guess < n))[0]
    ok = passes(guess, todo)
    up = todo[~ok[todo]]
    down = todo[ok[todo]]
    hi[down] = guess[down]
    lo[up] = guess[up] + 1
    while len(down) or len(up):  # widen ×4 until the crossing is bracketed
      k = hi.copy()
      k[down] = np.maximum(hi[down] // 4, lo[down])
      k[up] = np.minimum(lo[up] * 4, n[up])
      members = np.concatenate([down[k[down] < hi[down]], up[k[up] < n[up]]]).astype(np.int64)
      ok = passes(k, members)
      nxt_down = [i for i in down if k[i] < hi[i] and ok[i] and k[i] > lo[i]]
      for i in down:
        if k[i] < hi[i]:
          if ok[i]:
            hi[i] = k[i]
          else:
            lo[i] = k[i] + 1
      nxt_up = []
      for i in up:
        if k[i] < n[i] and ok[i]:
          hi[i] = k[i]
        elif k[i] < n[i]:
          lo[i] = k[i] + 1
          nxt_up.append(i)
      down, up = np.asarray(nxt_down, np.int64), np.asarray(nxt_up, np.int64)
    grid = 0
  if grid:
    found = ~reaches
    sizes = [grid_sizes(int(x), grid) for x in n]
    for j in range(max(map(len, sizes), default=0)):
      k_j = np.asarray([s[j] if j < len(s) else hi_ for s, hi_ in zip(sizes, hi)])
      todo = np.nonzero(~found & (k_j < hi))[0]
      if not len(todo):
        continue
      ok = passes(k_j, todo)
      hi = np.where(ok, k_j, hi)
      lo = np.where(~found & ~ok & (k_j < hi), np.maximum(lo, k_j + 1), lo)
      found |= ok
      if found.all():
        break
  for _ in range(int(math.ceil(math.log2(int(n.max()) + 1))) + 1):
    searching = hi - lo > np.floor(rtol * hi)
    if not searching.any():
      break
    mid = (lo + hi) // 2
    ok = passes(mid, np.nonzero(searching)[0])
    hi = np.where(ok, mid, hi)
    lo = np.where(searching & ~ok, mid + 1, lo)
  return np.where(reaches, hi, -1), best_loss
