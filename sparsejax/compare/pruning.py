"""The comparison's one contact with the pruning pipeline: prune a member, and measure its
circuit size at every target loss of the Fig. 2 sweep.

**The headline circuits are the full pipeline's.** At the primary target (the pruning config's
``target_loss``) each member is pruned by :class:`sparsejax.circuits.prune_run.Pruner`: node
search, bisection, edge pruning (the essential edges), clean-up and the checks; it also writes
the member's circuits and summary. Those circuits (paper-comparable edges of the cleaned node
circuit, and essential edges) are the ``primary`` entries: Fig. 3, the members table and the
headline ratio use them.

**The Fig. 2 sweep is one mask-learning run per member and task, discretized at each target.**
The paper tuned the pruning hyperparameters per (model, task, target) with CARBS (paper-notes §3).
Here the chosen member's node τ (learned at the primary target) is bisected at every target of the
sweep, the primary one included, on the same held-out pairs with the pipeline's bisection
settings; its edges are every nonzero weight between the kept nodes. No clean-up or edge pruning
runs on these (the sweep stays one consistent measurement across targets), so sweep sizes are
upper bounds on the cleaned circuits, and sizes far from the primary target are upper bounds on
what a search tuned for that target would find.

At each target the circuit's test loss and random circuits with the same nodes per site are
measured, so that search failures can be detected (:mod:`sparsejax.compare.analysis`).

The pipeline returns no τ; :class:`_TauPruner` keeps the chosen members' τ as the node stage
hands them on (the pipeline's private ``_prune_nodes``: the one place this adapter reaches in).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import numpy as np

from sparsejax.circuits import checks as checks_lib
from sparsejax.circuits import prune
from sparsejax.circuits import prune_run
from sparsejax.circuits.bisection import bisect_k, topk_masks
from sparsejax.circuits.calibration import numpy_loss
from sparsejax.circuits.graph import find_edges
from sparsejax.circuits.population import stable_seed
from sparsejax.train.runs import load_run
from sparsejax.utils.files import atomic_write_json, read_json

RECORD_FILE = "compare_targets.json"  # in the member's prune directory
API = ("prune_run.Pruner: node search, bisection, edge pruning, clean-up (primary); "
       "sweep: the chosen τ bisected at each target")


class _TauPruner(prune_run.Pruner):
  """The pipeline, keeping each task's chosen node τ (``self.taus``) for the sweep."""

  taus: dict

  def _prune_nodes(self, groups, history):
    work = super()._prune_nodes(groups, history)
    self.taus = {w.name: np.asarray(w.tau) for w in work}
    return work


def discretize_at_targets(pruner: prune_run.Pruner, taus: dict, targets, *,
                          progress: Callable[[str], None] = print) -> dict:
  """{task: {target: size and losses}} from each task's τ: the smallest top-k node set whose val
  loss reaches the target (the pipeline's bisection and its settings), then on test pairs its
  loss and the mean loss of ``cfg.random_circuits`` random circuits with its nodes per site.
  A target the full model misses on val gets ``k = -1``."""
  cfg, layout, run = pruner.cfg, pruner.layout, pruner.run
  names = list(taus)
  if not names:
    return {}
  splits = pruner.task_splits(names)
  tau = np.stack([taus[n] for n in names]).astype(np.float32)
  evaluate = pruner.model.loss_evaluator([splits[n]["val"] for n in names],
                                         calibrated=cfg.bisect_on == "calibrated")
  out = {n: {} for n in names}
  for t_i, target in enumerate(targets):
    k, val_loss = bisect_k(evaluate, tau, target, layout.n_nodes, rtol=cfg.bisect_rtol,
                           grid=cfg.bisect_grid)
    masks = np.asarray(topk_masks(tau, np.maximum(k, 0)))
    q, plans = pruner.model.margins_queue(), {}
    for i, name in enumerate(names):
      if k[i] < 0:
        out[name][target] = {"k": -1, "nodes": None, "edges": None,
                             "loss_val": float(val_loss[i]), "loss_test": None,
                             "random_loss_mean": None}
        continue
      test = splits[name]["test"]
      seed = [cfg.seed, stable_seed(name), 17, t_i]
      plans[name] = (q.add(test, masks[i], None),
                     [q.add(test, m, None) for m in checks_lib.random_node_masks(
                         layout, masks[i], cfg.random_circuits, seed)])
    res = q.run()
    for i, name in enumerate(names):
      if name not in plans:
        continue
      t_loss, t_rand = plans[name]
      nodes = layout.nodes_of(masks[i])
      edges, _ = find_edges(nodes, run.params, run.config.model)
      out[name][target] = {
          "k": int(k[i]), "nodes": int(sum(map(len, nodes.values()))), "edges": len(edges),
          "loss_val": float(val_loss[i]), "loss_test": numpy_loss(res[t_loss]),
          "random_loss_mean": (float(np.mean([numpy_loss(res[r]) for r in t_rand]))
                               if t_rand else None)}
    progress(f"compare: target {target:g}: nodes " + ", ".join(
        f"{n} {out[n][target]['nodes']}" for n in names))
  return out


def _primary(c) -> dict:
  """The full pipeline's circuit: cleaned node circuit (paper-comparable edges) and its essential
  edges, with the checks on test pairs."""
  m = c.metrics
  ctrl = m.get("control") or {}
  ess = m.get("essential") or {}
  return {"k": c.info.get("k"), "nodes": c.n_nodes, "edges": c.n_edges,
          "essential_edges": c.n_essential_edges, "essential_nodes": c.n_essential_nodes,
          "loss_val": m.get("loss_val"), "loss_test": m["loss"],
          "loss_calibrated": m.get("loss_calibrated"),
          "random_loss_mean": m.get("random_circuit_loss_mean"),
          "essential_loss_test": ess.get("loss"),
          "essential_random_loss_mean": ess.get("random_circuit_loss_mean"),
          "inverse_loss": m.get("inverse_loss"), "full_model_loss": m.get("full_model_loss"),
          "control_solves_test": ctrl.get("solves_test")}


def _cached(path: str, step: int, cfg: prune.PruneConfig, targets, names) -> dict | None:
  if not os.path.exists(path):
    return None
  rec = read_json(path, "a comparison pruning record")
  covered = set(rec.get("tasks", {})) | set(rec.get("unsolved", {}))
  same = (rec.get("api") == API and rec.get("step") == step
          and rec.get("config") == _jsonable(dataclasses.asdict(cfg))
          and rec.get("targets") == list(targets))
  return rec if same and covered >= set(names) else None


def _jsonable(x):
  return json.loads(json.dumps(x))


def prune_member(workdir: str, step: int, names: list[str], cfg: prune.PruneConfig, targets, *,
                 viewer: bool = False, progress: Callable[[str], None] = print) -> dict:
  """Prunes the run (its latest checkpoint, at ``step``) on ``names`` with one mask-learning run;
  writes WORKDIR/prune (circuits, summary, with ``viewer`` the circuit viewer, and the target
  sweep) and returns the record ``{"tasks": {task: {"primary": ..., "sweep": {target: ...}}},
  "unsolved": ...}``. A record already there for the same step, config and targets covering
  ``names`` is reused."""
  from sparsejax import pipeline
  prune_dir = os.path.join(workdir, "prune")
  path = os.path.join(prune_dir, RECORD_FILE)
  targets = [float(t) for t in targets]
  rec = _cached(path, step, cfg, targets, names)
  fresh = rec is None
  if not fresh:
    progress(f"compare: {workdir}: pruning already done ({len(rec['tasks'])} circuits)")
  else:
    run = load_run(workdir)
    pruner = _TauPruner(run, cfg, progress)
    result = pruner.prune_tasks(names)
    prune_run.write_outputs(result, prune_dir)
    progress(prune_run.format_summary(result))
    taus = {name: pruner.taus[name] for name in result.circuits}
    sweep = discretize_at_targets(pruner, taus, targets, progress=progress)
    rec = {"api": API, "step": run.step, "config": dataclasses.asdict(cfg), "targets": targets,
           "tasks": {name: {"primary": _primary(c),
                            "sweep": {str(t): sweep[name][t] for t in targets}}
                     for name, c in result.circuits.items()},
           "unsolved": result.unsolved}
    atomic_write_json(path, rec, indent=2)
  index = os.path.join(prune_dir, "viewer", "index.html")
  if viewer and rec["tasks"] and (fresh or not os.path.exists(index)):
    pipeline.build_viewer(workdir, prune_dir, progress=progress)
  return rec
