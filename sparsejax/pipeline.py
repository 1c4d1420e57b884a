"""The whole loop on one run directory: train → evaluate the tasks → prune → viewer.

Each stage is resumable on its own: training resumes from checkpoints, and every later stage reads
only what the earlier ones wrote into the run directory.
"""

from __future__ import annotations

import glob
import json
import os
import time
from typing import Callable

from sparsejax.circuits import prune
from sparsejax.circuits import prune_run
from sparsejax.tasks import evaluation as task_eval
from sparsejax.tasks import generators as tasks_lib
from sparsejax.circuits import viewer
from sparsejax.circuits.analysis import node_details
from sparsejax.circuits.graph import Circuit
from sparsejax.train.metrics import read_metrics
from sparsejax.train.runs import load_run
from sparsejax.utils.files import atomic_write_json


def evaluate_tasks(workdir: str, names, *, pairs: int = 200, target_loss: float = 0.15,
                   splits=task_eval.EVAL_SPLITS, out: str | None = None,
                   progress: Callable[[str], None] = print) -> dict:
  """Scores the run on the task splits (test, ood), prints the table and writes ``out`` (default
  WORKDIR/task_eval.json). Returns {task: result} as :func:`task_eval.evaluate_run`."""
  run = load_run(workdir)
  results = task_eval.evaluate_run(run, names, pairs=pairs, splits=splits, progress=progress)
  progress(f"run {workdir} at step {run.step}")
  progress(task_eval.format_table(results, target_loss))
  path = out or os.path.join(workdir, "task_eval.json")
  atomic_write_json(path, task_eval.report(run.step, results, target_loss), indent=2)
  return results


def build_viewer(workdir: str, prune_dir: str, out_dir: str | None = None, *,
                 progress: Callable[[str], None] = print) -> str:
  """Viewer pages for the circuits in ``prune_dir``; returns the index page's path."""
  with open(os.path.join(prune_dir, "summary.json")) as f:
    summary = json.load(f)
  circuits = {}
  for path in sorted(glob.glob(os.path.join(prune_dir, "circuits", "*.json"))):
    c = Circuit.load(path)
    circuits[c.task] = c.to_dict()
  run = load_run(workdir)
  cfg = prune.PruneConfig(**summary["config"])
  pruner = prune_run.Pruner(run, cfg, progress)
  t0 = time.time()
  splits = pruner.task_splits(list(circuits)) if circuits else {}  # one length for all: one compile
  details = node_details(pruner, {n: Circuit.from_dict(c) for n, c in circuits.items()},
                         {n: s["test"] for n, s in splits.items()}, run.tokenizer)
  progress(f"view: node details for {len(circuits)} circuits ({time.time() - t0:.1f}s)")
  try:
    metrics_rows = read_metrics(workdir)
  except OSError:
    metrics_rows = None
  m = run.config.model
  run_info = (f"run {os.path.abspath(workdir)} at step {run.step}: {m.n_layer} layers, d_model "
              f"{m.d_model}, vocab {m.vocab_size}, hidden density "
              f"{run.config.sparsity.target_density:g}, {cfg.ablation} ablation")
  descriptions = {n: t.description for n, t in tasks_lib.TASKS.items()}
  return viewer.write_site(out_dir or os.path.join(prune_dir, "viewer"), summary, circuits,
                           details, descriptions, metrics_rows, run_info)
