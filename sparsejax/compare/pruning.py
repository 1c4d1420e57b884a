"""The comparison's one contact with the pruning pipeline: prune a member, and measure its
circuit size at every target loss of the Fig. 2 sweep.

**One mask-learning run per member and task, discretized at each target.** The paper tuned the
pruning hyperparameters per (model, task, target) with CARBS (paper-notes §3). Here the masks are
learned once, at the primary target (the pruning config's ``target_loss``), by the normal
pipeline (:class:`sparsejax.circuits.prune_run.Pruner`), which also writes the member's circuits,
summary and controls; then the chosen member's τ (node scores) is bisected again at every other
target on the same held-out pairs. This costs one bisection per target instead of one search
per target — what makes a sweep affordable — and sizes at a target far from the primary one are
upper bounds on what a search tuned for that target would find.

At each target the circuit's test loss and random circuits with the same nodes per site are
measured, so that search failures can be detected (:mod:`sparsejax.compare.analysis`).

The pruning API this adapter is written against: ``Pruner(run, cfg, progress).prune_tasks(names)``
→ ``PruneResult`` (circuits with ``n_nodes``, ``n_edges``, ``metrics`` and ``info["member"]``).
It exposes no τ, so :func:`_recording_masks` records the τ of the mask-learning call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
from typing import Callable

import jax.numpy as jnp
import numpy as np

from sparsejax.circuits import prune
from sparsejax.circuits import prune_run
from sparsejax.circuits.graph import find_edges
from sparsejax.train.runs import load_run
from sparsejax.utils.files import atomic_write_json, read_json

RECORD_FILE = "compare_targets.json"  # in the member's prune directory
API = "prune_run.Pruner: node circuits; bisected, not cleaned; no essential edges"


@contextlib.contextmanager
def _recording_masks():
  """Records ``(population, τ)`` of every :func:`prune.learn_masks` call made in the block.

  The pipeline keeps τ to itself; this is the smallest hook that gets it without learning the
  masks a second time. It goes once the pipeline returns the chosen member's τ."""
  calls = []
  original = prune.learn_masks

  def recording(*args, **kwargs):
    tau = original(*args, **kwargs)
    calls.append(tau)
    return tau

  prune.learn_masks = recording
  try:
    yield calls
  finally:
    prune.learn_masks = original


def _stable(name: str) -> int:
  return int.from_bytes(hashlib.sha256(name.encode()).digest()[:3], "little")


def random_mask(layout: prune.NodeLayout, nodes: dict, rng: np.random.Generator) -> np.ndarray:
  """A mask with as many nodes at each site as ``nodes``, drawn uniformly at random."""
  mask = np.zeros(layout.n_nodes, np.float32)
  for s, o, w in zip(layout.sites, layout.offsets, layout.widths):
    if nodes.get(s):
      mask[o + rng.choice(w, len(nodes[s]), replace=False)] = 1.0
  return mask


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
  out = {n: {} for n in names}
  for t_i, target in enumerate(targets):

    def evaluate(masks, members):
      q = pruner.loss_queue()
      for m, i in zip(np.asarray(masks), members):
        q.add(m, splits[names[i]]["val"])
      return np.asarray(q.run())

    k, val_loss = prune.bisect_k(evaluate, tau, target, layout.n_nodes, cfg.bisect_rtol,
                                 cfg.bisect_grid)
    masks = np.asarray(prune.topk_masks(jnp.asarray(tau), jnp.asarray(np.maximum(k, 0))))
    q, plans = pruner.loss_queue(), {}
    for i, name in enumerate(names):
      if k[i] < 0:
        out[name][target] = {"k": -1, "nodes": None, "edges": None,
                             "loss_val": float(val_loss[i]), "loss_test": None,
                             "random_loss_mean": None}
        continue
      nodes = {s: np.nonzero(m)[0].tolist() for s, m in layout.split(masks[i]).items()}
      test = splits[name]["test"]
      rng = np.random.default_rng([cfg.seed, _stable(name), 17, t_i])
      plans[name] = (nodes, q.add(masks[i], test),
                     [q.add(random_mask(layout, nodes, rng), test)
                      for _ in range(cfg.random_circuits)])
    res = q.run()
    for i, name in enumerate(names):
      if name not in plans:
        continue
      nodes, t_loss, t_rand = plans[name]
      edges, _ = find_edges(nodes, run.params, run.config.model)
      out[name][target] = {
          "k": int(k[i]), "nodes": int(sum(map(len, nodes.values()))), "edges": len(edges),
          "loss_val": float(val_loss[i]), "loss_test": float(res[t_loss]),
          "random_loss_mean": float(np.mean([res[r] for r in t_rand])) if t_rand else None}
    progress(f"compare: target {target:g}: nodes " + ", ".join(
        f"{n} {out[n][target]['nodes']}" for n in names))
  return out


def _at_primary(c) -> dict:
  """The sweep's entry at the primary target: the pipeline's circuit, bisected from the same τ
  with the same settings as the other targets."""
  m = c.metrics
  return {"k": c.info["k"], "nodes": c.n_nodes, "edges": c.n_edges, "loss_val": m["loss_val"],
          "loss_test": m["loss"], "random_loss_mean": m.get("random_circuit_loss_mean")}


def _primary(c) -> dict:
  m = c.metrics
  ctrl = m.get("control") or {}
  return {"nodes": c.n_nodes, "edges": c.n_edges,
          "essential_edges": getattr(c, "n_essential_edges", None),
          "loss_test": m["loss"], "loss_calibrated": m.get("loss_calibrated"),
          "random_loss_mean": m.get("random_circuit_loss_mean"),
          "inverse_loss": m.get("inverse_loss"), "full_model_loss": m.get("full_model_loss"),
          "control_solves_test": ctrl.get("solves_test")}


def _cached(path: str, step: int, cfg: prune.PruneConfig, targets, names) -> dict | None:
  if not os.path.exists(path):
    return None
  rec = read_json(path, "a comparison pruning record")
  covered = set(rec.get("tasks", {})) | set(rec.get("unsolved", {}))
  same = (rec.get("step") == step and rec.get("config") == _jsonable(dataclasses.asdict(cfg))
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
    pruner = prune_run.Pruner(run, cfg, progress)
    with _recording_masks() as calls:
      result = pruner.prune_tasks(names)
    if result.circuits and len(calls) != 1:
      raise RuntimeError(f"the pruning pipeline learned masks {len(calls)} times; the comparison "
                         "expects one call (sparsejax/compare/pruning.py)")
    shutil.rmtree(os.path.join(prune_dir, "circuits"), ignore_errors=True)  # no stale tasks
    prune_run.write_outputs(result, prune_dir)
    progress(prune_run.format_summary(result))
    taus = {name: calls[-1][c.info["member"]] for name, c in result.circuits.items()}
    others = [t for t in targets if t != cfg.target_loss]
    sweep = discretize_at_targets(pruner, taus, others, progress=progress)
    for name, c in result.circuits.items():  # the pipeline's own bisection at its target
      sweep[name][cfg.target_loss] = _at_primary(c)
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
