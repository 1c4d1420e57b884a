"""The numbers that say whether to trust a circuit: one small function per check.

A check looks at one :class:`Subject` (a circuit on its task: nodes, optionally its kept edges, its
shuffled-label control) and adds the evaluations it needs to the shared queue, returning a
function that turns the queue's results into its metrics. :func:`run_checks` runs every check of
every subject through one :class:`~sparsejax.circuits.evaluate.EvalQueue`: all circuits of all
tasks in a few compiled, vmapped calls. A new check is one function added to :data:`CHECKS`.

A circuit is judged on its task's *test* pairs (never seen by the search, the bisection or the
clean-up); the calibrated loss is fitted on the val pairs and judged on test.

* ``loss`` — the circuit alone (everything else ablated), raw and logit-calibrated;
* ``inverse`` — the full model with only the circuit ablated (its nodes, or for an edge circuit
  its kept edges): a faithful circuit should matter;
* ``random`` — random circuits of the same size: the same number of nodes per site (a node
  circuit) or of kept edges per matrix among the node circuit's edges (an edge circuit);
* ``control`` — the same search on a copy of the task with shuffled labels, at the same size,
  judged on its own training and test pairs: if a circuit that small "solves" a nonsense task on
  its training pairs, the real circuit's low loss proves little;
* ``pruning_curve`` — the loss of the top-k nodes by learned τ, for k on a geometric grid.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from sparsejax.circuits import calibration
from sparsejax.circuits.bisection import topk_masks
from sparsejax.circuits.evaluate import EdgeMask, EvalQueue, TaskData
from sparsejax.circuits.masks import NodeLayout


@dataclasses.dataclass
class Subject:
  """One circuit to check. ``edge_mask`` None: every edge between its nodes is kept."""

  task: str
  node_mask: np.ndarray  # (n_nodes,) hard mask
  splits: dict[str, TaskData]  # "val" and "test" pairs of the task
  edge_mask: EdgeMask | None = None  # the kept edges, over the node circuit's full edge table
  control: "Subject | None" = None  # shuffled-label control at the same size ("train", "test")
  tau: np.ndarray | None = None  # learned node τ, for the pruning curve
  seed: int = 0  # of the random circuits


@dataclasses.dataclass(frozen=True)
class Context:
  layout: NodeLayout
  target_loss: float
  calibrate: bool
  random_circuits: int
  test_pairs: int


Finish = Callable[[list], dict]
Check = Callable[[Context, Subject, EvalQueue], Finish | None]


def _loss(z) -> float:
  return calibration.numpy_loss(z)


def check_loss(ctx: Context, s: Subject, q: EvalQueue) -> Finish:
  test = q.add(s.splits["test"], s.node_mask, s.edge_mask)
  val = q.add(s.splits["val"], s.node_mask, s.edge_mask) if ctx.calibrate else None

  def finish(res):
    out = {"loss": _loss(res[test])}
    if val is not None:
      scale, shift = calibration.fit_logit_calibration(res[val])
      out["loss_calibrated"] = calibration.numpy_loss(res[test], scale, shift)
      out["calibration"] = {"scale": scale, "shift": shift}
    return out

  return finish


def check_inverse(ctx: Context, s: Subject, q: EvalQueue) -> Finish:
  if s.edge_mask is None:
    t = q.add(s.splits["test"], 1.0 - s.node_mask, None)
  else:  # every node kept, only the circuit's kept edges ablated
    valid = np.asarray(s.edge_mask.table.flat_valid())
    t = q.add(s.splits["test"], np.ones_like(s.node_mask),
              EdgeMask(s.edge_mask.table, valid - np.asarray(s.edge_mask.keep)))
  return lambda res: {"inverse_loss": _loss(res[t])}


def random_node_masks(layout: NodeLayout, mask: np.ndarray, n: int, seed) -> list[np.ndarray]:
  """n random masks with the same number of nodes per site as ``mask``."""
  rng = np.random.default_rng(seed)
  counts = {s: int(v.sum()) for s, v in layout.split(np.asarray(mask)).items()}
  out = []
  for _ in range(n):
    r = np.zeros(layout.n_nodes, np.float32)
    for s, o, w in zip(layout.sites, layout.offsets, layout.widths):
      if counts[s]:
        r[o + rng.choice(w, counts[s], replace=False)] = 1.0
    out.append(r)
  return out


def random_edge_keeps(edge_mask: EdgeMask, n: int, seed) -> list[np.ndarray]:
  """n random keep vectors with the same number of kept edges per matrix among the table's."""
  rng = np.random.default_rng(seed)
  valid = np.asarray(edge_mask.table.flat_valid())
  keep = np.asarray(edge_mask.keep)
  out = []
  for _ in range(n):
    r = np.zeros_like(valid)
    for a, b in edge_mask.table.slot_ranges().values():
      k = int(keep[a:b].sum())
      if k:
        r[a + rng.choice(np.nonzero(valid[a:b])[0], k, replace=False)] = 1.0
    out.append(r)
  return out


def check_random(ctx: Context, s: Subject, q: EvalQueue) -> Finish | None:
  if not ctx.random_circuits:
    return None
  seed = [s.seed, 3]
  if s.edge_mask is None:
    ts = [q.add(s.splits["test"], m, None)
          for m in random_node_masks(ctx.layout, s.node_mask, ctx.random_circuits, seed)]
  else:
    ts = [q.add(s.splits["test"], s.node_mask, EdgeMask(s.edge_mask.table, k))
          for k in random_edge_keeps(s.edge_mask, ctx.random_circuits, seed)]

  def finish(res):
    losses = [_loss(res[t]) for t in ts]
    return {"random_circuit_losses": losses, "random_circuit_loss_mean": float(np.mean(losses))}

  return finish


def check_control(ctx: Context, s: Subject, q: EvalQueue) -> Finish | None:
  c = s.control
  if c is None:
    return None
  # Judged on as many training pairs as there are test pairs (one batch shape).
  train = q.add(c.splits["train"].pairs(0, ctx.test_pairs), c.node_mask, c.edge_mask)
  test = q.add(c.splits["test"], c.node_mask, c.edge_mask)

  def finish(res):
    tr, te = _loss(res[train]), _loss(res[test])
    out = {"kind": "shuffled_labels", "nodes": int(np.sum(c.node_mask)), "loss_train": tr,
           "loss_test": te, "solves_train": bool(tr <= ctx.target_loss),
           "solves_test": bool(te <= ctx.target_loss)}
    if c.edge_mask is not None:
      out["edges"] = int(np.sum(c.edge_mask.keep))
    return {"control": out}

  return finish


def check_pruning_curve(ctx: Context, s: Subject, q: EvalQueue) -> Finish | None:
  if s.tau is None or s.edge_mask is not None:
    return None
  n = ctx.layout.n_nodes
  ks = sorted({0, int(np.sum(s.node_mask)), n} | {int(round(x)) for x in np.geomspace(1, n, 5)})
  masks = topk_masks(np.repeat(np.asarray(s.tau)[None], len(ks), 0), np.asarray(ks))
  ts = [(k, q.add(s.splits["test"], m, None)) for k, m in zip(ks, masks)]
  return lambda res: {"pruning_curve": [[k, _loss(res[t])] for k, t in ts]}


CHECKS: dict[str, Check] = {
    "loss": check_loss,
    "inverse": check_inverse,
    "random": check_random,
    "control": check_control,
    "pruning_curve": check_pruning_curve,
}


def run_checks(ctx: Context, subjects: list[Subject], queue: EvalQueue,
               checks: dict[str, Check] | None = None) -> list[dict[str, Any]]:
  """Metrics of every subject: all checks' evaluations through one queue run."""
  checks = CHECKS if checks is None else checks
  plans = [[f for f in (check(ctx, s, queue) for check in checks.values()) if f is not None]
           for s in subjects]
  res = queue.run()
  out = []
  for fs in plans:
    metrics: dict[str, Any] = {"target_loss": ctx.target_loss}
    for f in fs:
      metrics.update(f(res))
    out.append(metrics)
  return out
