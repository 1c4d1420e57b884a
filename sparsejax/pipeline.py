"""The whole loop on one run directory: train → evaluate the tasks → prune → viewer.

Each stage is resumable on its own: training resumes from checkpoints, and every later stage reads
only what the earlier ones wrote into the run directory. The viewer shows the circuits with the
model they were pruned from (the step ``summary.json`` records), and only the tasks the summary
lists; it refuses, saying why, when that checkpoint is gone or the files disagree.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from sparsejax.circuits import prune
from sparsejax.circuits import prune_run
from sparsejax.tasks import evaluation as task_eval
from sparsejax.tasks import generators as tasks_lib
from sparsejax.circuits import viewer
from sparsejax.circuits.analysis import node_details
from sparsejax.circuits.graph import Circuit
from sparsejax.train.checkpoint import CheckpointError
from sparsejax.train.metrics import read_metrics
from sparsejax.train.run_config import build
from sparsejax.train.runs import RunError, load_run
from sparsejax.utils.errors import ConfigError, FileFormatError, UserError
from sparsejax.utils.files import (atomic_write_json, check_writable_dir, read_json,
                                   remove_stale_files)

SUMMARY_FILE = "summary.json"


def check_task_names(names) -> list[str]:
  """At least one task: an empty ``--tasks`` is an error, not an empty table."""
  names = list(names)
  if not names:
    raise ConfigError("--tasks: no task names given (use 'all' or a comma-separated list)")
  return names


def evaluate_tasks(workdir: str, names, *, pairs: int = 200, target_loss: float = 0.15,
                   splits=task_eval.EVAL_SPLITS, out: str | None = None,
                   progress: Callable[[str], None] = print) -> dict:
  """Scores the run on the task splits (test, ood), prints the table and writes ``out`` (default
  WORKDIR/task_eval.json; checked before the work). Returns {task: result} as
  :func:`task_eval.evaluate_run`."""
  names = check_task_names(names)
  if pairs < 1:
    raise ConfigError(f"--pairs: must be >= 1, got {pairs}")
  path = out or os.path.join(workdir, "task_eval.json")
  run = load_run(workdir, progress=progress)
  check_writable_dir(os.path.dirname(os.path.abspath(path)), "--out")
  results = task_eval.evaluate_run(run, names, pairs=pairs, splits=splits, progress=progress)
  progress(f"run {workdir} at step {run.step}")
  progress(task_eval.format_table(results, target_loss))
  atomic_write_json(path, task_eval.report(run.step, results, target_loss), indent=2)
  return results


# ------------------------------------------------------------------ reading pruning outputs
def _number(value: Any, where: str, *, optional: bool = False, integer: bool = False) -> None:
  ok = (value is None and optional) or (
      isinstance(value, int if integer else (int, float)) and not isinstance(value, bool))
  if not ok:
    kind = "an integer" if integer else "a number"
    raise FileFormatError(f"{where}: expected {kind}{' or null' if optional else ''}, got "
                          f"{value!r:.60}")


def _mapping(value: Any, where: str) -> dict:
  if not isinstance(value, dict):
    raise FileFormatError(f"{where}: expected a JSON object, got {type(value).__name__}")
  return value


def read_summary(prune_dir: str) -> tuple[dict, prune.PruneConfig]:
  """``prune_dir/summary.json`` checked field by field (a hand-edited value that is not what it
  should be is named), and its PruneConfig."""
  path = os.path.join(prune_dir, SUMMARY_FILE)
  if not os.path.exists(path):
    raise RunError(f"{prune_dir} has no {SUMMARY_FILE}: run experiments/prune.py first")
  summary = _mapping(read_json(path, "a pruning summary (experiments/prune.py)"), path)
  for name, row in _mapping(summary.get("tasks"), f"{path}: tasks").items():
    where = f"{path}: tasks.{name}"
    _mapping(row, where)
    for key in ("nodes", "edges"):
      _number(row.get(key), f"{where}.{key}", integer=True)
    _number(row.get("loss"), f"{where}.loss")
    for key in ("loss_calibrated", "full_model_loss", "inverse_loss",
                "random_circuit_loss_mean"):
      _number(row.get(key), f"{where}.{key}", optional=True)
    if row.get("control") is not None:
      control = _mapping(row["control"], f"{where}.control")
      for key in ("loss_train", "loss_test"):
        _number(control.get(key), f"{where}.control.{key}", optional=True)
  for name, row in _mapping(summary.get("unsolved", {}), f"{path}: unsolved").items():
    _number(_mapping(row, f"{path}: unsolved.{name}").get("full_model_loss_test"),
            f"{path}: unsolved.{name}.full_model_loss_test")
  _number(summary.get("geometric_mean_edges"), f"{path}: geometric_mean_edges", optional=True)
  _number(summary.get("step"), f"{path}: step", optional=True, integer=True)
  try:
    cfg = build(prune.PruneConfig, _mapping(summary.get("config"), f"{path}: config"), "config")
  except ConfigError as e:
    raise FileFormatError(f"{path}: {e}") from None
  return summary, cfg


def read_circuits(prune_dir: str, names) -> dict[str, Circuit]:
  """The circuits of the tasks ``names`` from ``prune_dir/circuits`` (other files there are not
  this summary's and are ignored)."""
  out = {}
  for name in names:
    path = os.path.join(prune_dir, "circuits", f"{name}.json")
    if not os.path.exists(path):
      raise FileFormatError(f"{os.path.join(prune_dir, SUMMARY_FILE)} lists task {name}, but "
                            f"{path} is missing: run experiments/prune.py again")
    data = read_json(path, "a circuit (experiments/prune.py)")
    try:
      circuit = Circuit.from_dict(_mapping(data, path))
      metrics = circuit.metrics
      for key in ("loss", "full_model_loss", "inverse_loss", "target_loss"):
        _number(metrics.get(key), f"{path}: metrics.{key}")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
      if isinstance(e, UserError):
        raise
      raise FileFormatError(f"{path}: not a circuit file ({type(e).__name__}: {e})") from None
    if circuit.task != name:
      raise FileFormatError(f"{path}: holds task {circuit.task!r}, not {name!r}")
    out[name] = circuit
  return out


def _pruned_step(summary: dict, circuits: dict[str, Circuit], prune_dir: str) -> int | None:
  """The training step the circuits were pruned at (None if the files do not record it)."""
  steps = {"summary.json": summary.get("step")}
  steps.update({f"circuits/{n}.json": c.info.get("step") for n, c in circuits.items()})
  known = {k: v for k, v in steps.items() if v is not None}
  if len(set(known.values())) > 1:
    listing = ", ".join(f"{k} at step {v}" for k, v in sorted(known.items()))
    raise FileFormatError(f"{prune_dir} mixes outputs of different pruning runs ({listing}): run "
                          "experiments/prune.py again")
  return next(iter(known.values()), None)


def build_viewer(workdir: str, prune_dir: str, out_dir: str | None = None, *,
                 progress: Callable[[str], None] = print) -> str:
  """Viewer pages for the circuits in ``prune_dir``; returns the index page's path."""
  summary, cfg = read_summary(prune_dir)
  circuit_objs = read_circuits(prune_dir, list(summary["tasks"]))
  step = _pruned_step(summary, circuit_objs, prune_dir)
  if step is None:
    progress(f"view: {prune_dir} does not record the training step it pruned; using the latest "
             "checkpoint")
  try:
    run = load_run(workdir, step, progress=progress)
  except CheckpointError as e:
    if step is None:
      raise
    raise RunError(f"the circuits in {prune_dir} were pruned at step {step}, which cannot be "
                   f"loaded ({e}); run experiments/prune.py again to prune the current model"
                   ) from None
  circuits = {n: c.to_dict() for n, c in circuit_objs.items()}
  pruner = prune_run.Pruner(run, cfg, progress)
  t0 = time.time()
  splits = pruner.task_splits(list(circuits)) if circuits else {}  # one length for all: one compile
  details = node_details(pruner, circuit_objs, {n: s["test"] for n, s in splits.items()},
                         run.tokenizer)
  progress(f"view: node details for {len(circuits)} circuits ({time.time() - t0:.1f}s)")
  try:
    metrics_rows = read_metrics(workdir)
  except FileNotFoundError:
    metrics_rows = None
  except UserError as e:  # a damaged metrics.jsonl costs the curve, not the viewer
    progress(f"view: no training curve ({e})")
    metrics_rows = None
  m = run.config.model
  run_info = (f"run {os.path.abspath(workdir)} at step {run.step}: {m.n_layer} layers, d_model "
              f"{m.d_model}, vocab {m.vocab_size}, hidden density "
              f"{run.config.sparsity.target_density:g}, {cfg.ablation} ablation")
  descriptions = {n: t.description for n, t in tasks_lib.TASKS.items()}
  out_dir = out_dir or os.path.join(prune_dir, "viewer")
  index = viewer.write_site(out_dir, summary, circuits, details, descriptions, metrics_rows,
                            run_info)
  remove_stale_files(out_dir, {viewer.task_file(n) for n in circuits},
                     viewer.task_file("*"))  # pages of tasks an earlier pruning run had
  return index
