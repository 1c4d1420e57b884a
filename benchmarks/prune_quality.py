"""Circuit sizes at equal compute: a fixed random population vs the adaptive search (PBT).

Prunes the tasks a trained run solves once per search strategy (``--searches``, default
``random,pbt``) with one config, so both spend the same member-steps × pairs (candidates × steps ×
batch_pairs per task, the same edge budget and clean-up); PBT adds only its between-round fitness
evaluations. Prints per task the nodes, the paper-comparable edges (every nonzero weight between
kept nodes) and the essential edges, then per strategy the geometric means, the test losses and the
wall time (compiles included). With ``--repeats`` > 1 the strategies alternate, so drift on a
shared machine hits both alike; times are medians. Ends with ``essential_edges_geomean: X`` (the
last strategy's).

  PYTHONPATH=. python benchmarks/prune_quality.py --workdir=runs/tiny \\
      [--config=experiments/configs/prune.py:quick] [--tasks=solved] [--searches=random,pbt]
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from common import device_line
from sparsejax import cli
from sparsejax.circuits import prune_run
from sparsejax.circuits.prune import PruneConfig
from sparsejax.tasks import generators as tasks_lib
from sparsejax.train import run_config
from sparsejax.train.runs import load_run

_CONFIG = config_flags.DEFINE_config_file(
    "config", str(Path(__file__).resolve().parents[1] / "experiments" / "configs" /
                  "prune.py") + ":quick", "Pruning config (experiments/configs/prune.py[:v]).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/tiny", "A trained run directory.")
_TASKS = flags.DEFINE_string("tasks", "solved", "'solved' (the run's task_eval.json), 'all', or "
                             "comma-separated names.")
_SEARCHES = flags.DEFINE_string("searches", "random,pbt", "Search strategies to compare.")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Runs per strategy (alternating).")
_OUT = flags.DEFINE_string("out", None, "Write each run's summary.json under this directory.")


def task_names(workdir: str, spec: str, target: float) -> list[str]:
  if spec != "solved":
    return tasks_lib.resolve_names(spec)
  path = os.path.join(workdir, "task_eval.json")
  if not os.path.exists(path):
    return list(tasks_lib.TASK_NAMES)  # the pruner skips what the model does not solve
  with open(path) as f:
    results = json.load(f)["tasks"]
  return [n for n, r in results.items() if r["loss"] <= target]


def main():
  cfg = run_config.build(PruneConfig, _CONFIG.value.to_dict(), "config")
  run = load_run(_WORKDIR.value)
  names = task_names(_WORKDIR.value, _TASKS.value, cfg.target_loss)
  searches = _SEARCHES.value.split(",")
  print(device_line())
  print(f"run {run.workdir} step {run.step}; {len(names)} tasks; budget per task: nodes "
        f"{cfg.candidates} candidates × {cfg.steps} steps × {cfg.batch_pairs} pairs "
        f"({cfg.rounds} rounds), edges {cfg.edge_candidates} × {cfg.edge_steps} × "
        f"{cfg.batch_pairs} ({cfg.edge_rounds} rounds); clean-up {cfg.cleanup_rounds} round(s)",
        flush=True)
  results: dict[str, list] = {s: [] for s in searches}
  for r in range(_REPEATS.value):
    for s in searches:
      c = dataclasses.replace(cfg, search=s)
      t0 = time.time()
      res = prune_run.Pruner(run, c, progress=lambda line: None).prune_tasks(names)
      seconds = time.time() - t0
      results[s].append((seconds, res.summary))
      print(f"{s} run {r + 1}: {seconds:.0f}s, essential edges geomean "
            f"{res.summary['geometric_mean_essential_edges']:.1f}", flush=True)
      if _OUT.value:
        out = os.path.join(_OUT.value, f"{s}_{r}")
        os.makedirs(out, exist_ok=True)
        prune_run.write_outputs(res, out)
  last = {s: results[s][-1][1] for s in searches}
  solved = list(next(iter(last.values()))["tasks"])
  head = "".join(f" {s + ' nodes':>12} {'edges':>7} {'essential':>9}" for s in searches)
  print(f"{'task':<28}{head}")
  for n in solved:
    row = "".join(f" {last[s]['tasks'][n]['nodes']:>12} {last[s]['tasks'][n]['edges']:>7} "
                  f"{last[s]['tasks'][n]['essential_edges']:>9}" for s in searches)
    print(f"{n:<28}{row}")
  print(f"{'search':<8} {'edges geomean':>14} {'essential geomean':>18} {'nodes geomean':>14} "
        f"{'test loss > target':>19} {'seconds (median)':>17}")
  for s in searches:
    summ = last[s]
    over = sum(r["loss"] > cfg.target_loss for r in summ["tasks"].values())
    secs = statistics.median(t for t, _ in results[s])
    print(f"{s:<8} {summ['geometric_mean_edges']:>14.1f} "
          f"{summ['geometric_mean_essential_edges']:>18.1f} {summ['geometric_mean_nodes']:>14.1f} "
          f"{over:>12} of {len(solved):<4} {secs:>17.0f}")
  print(f"essential_edges_geomean: {last[searches[-1]]['geometric_mean_essential_edges']:.1f}")


if __name__ == "__main__":
  cli.run(main)  # library logs quiet (orbax logs every restore at INFO), errors in one line
