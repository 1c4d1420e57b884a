"""The comparison end to end: train every member's sweep, find the tasks all members solve, prune
every member on them with one pruning setup, analyse, and write the report.

Every stage resumes from what is on disk: finished runs are not retrained (the trainer resumes
from checkpoints), held-out measurements, task evaluations and pruning records are reused when
they are for the same step and settings. A member that fails at any stage is reported with its
error and left out of what follows; the others go on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable

from sparsejax.compare import analysis
from sparsejax.compare import members as members_lib
from sparsejax.compare import pruning
from sparsejax.compare import report as report_lib
from sparsejax.compare.family import FamilyConfig
from sparsejax.tasks import generators as tasks_lib
from sparsejax.train.run_config import RunConfig
from sparsejax.utils.files import read_json

METHOD = [
    "Each member is trained at every learning rate of its sweep; the point with the lowest "
    "held-out loss (the same held-out windows for every member) is kept. Dense baselines get "
    "their own sweep: the sparse schedule's learning rate carries a sqrt(L0) factor that a dense "
    "run does not have, so reusing the sparse learning rate handicaps it.",
    "Total params count the hidden matrices and embeddings (not the bigram table, norms or "
    "biases), as the paper's 7.4M·e²; L0 counts their nonzero entries.",
    "Tasks compared: those every member solves (test loss at or below the primary target), "
    "pruned with one pruning config and budget for every member.",
    "Fig. 2 sizes: the masks are learned once per member and task (at the primary target) and "
    "the chosen candidate's node scores are bisected at every target, the primary one included, "
    "on held-out pairs, without clean-up or edge pruning (edges: every nonzero weight between "
    "kept nodes). The paper tuned the search per target with CARBS; one search per target would "
    "multiply the cost by the number of targets, and sizes far from the primary target are upper "
    "bounds.",
    "Fig. 3, the members table and the headline use the full pruning pipeline's circuits at the "
    "primary target (node search, bisection, edge pruning, clean-up): 'edges' are every nonzero "
    "weight between the cleaned circuit's nodes (the paper's count), 'essential edges' those the "
    "edge pruning keeps.",
    "Averages are geometric over the same tasks for every member. A circuit whose test loss "
    "misses the target, or whose size is reached by random circuits with the same nodes per site, "
    "is a search failure: its task is left out of the clean average for every member (and kept "
    "in the 'with failures' numbers).",
    "Matched loss: the dense members' losses and log circuit sizes are interpolated linearly in "
    "log total params between the two dense members whose losses bracket the sparse member's; a "
    "sparse member outside the dense range is not matched. The headline is the geometric mean "
    "of the matched ratios over sparse members.",
]


def _family_data(family: FamilyConfig) -> dict | None:
  """The data section every member must share: the first member whose config is valid."""
  for m in family.members:
    try:
      return RunConfig.from_dict(m.point_config(m.lrs[0])).to_dict()["data"]
    except Exception:  # noqa: BLE001 - that member reports its own error when it runs
      continue
  return None


def solved_tasks(workdir: str, step: int, names: list[str], *, pairs: int, target: float,
                 progress: Callable[[str], None] = print) -> dict[str, float]:
  """{task: test loss} for ``names`` on the run's checkpoint at ``step``, its latest (cached in
  the run's task_eval.json when it covers the same step, tasks and pair count)."""
  from sparsejax import pipeline
  path = os.path.join(workdir, "task_eval.json")
  if os.path.exists(path):
    cached = read_json(path, "a task evaluation")
    tasks = cached.get("tasks", {})
    if cached.get("step") == step and all(
        n in tasks and tasks[n].get("pairs") == pairs for n in names):
      return {n: tasks[n]["loss"] for n in names}
  results = pipeline.evaluate_tasks(workdir, names, pairs=pairs, target_loss=target,
                                    splits=("test",), progress=progress)
  return {n: r["loss"] for n, r in results.items()}


def run_family(family: FamilyConfig, out_dir: str, *, name: str = "family",
               train_only: list[str] | None = None,
               progress: Callable[[str], None] = print) -> dict | None:
  """Runs the comparison into ``out_dir`` and returns the report (also written there). With
  ``train_only``, only those members are trained and nothing else is done (returns None): a way
  to spread the members over machines that share ``out_dir``; a last run without it finds them
  trained and does the rest."""
  start = time.time()
  timing = {}
  names = tasks_lib.resolve_names(family.tasks)
  os.makedirs(out_dir, exist_ok=True)
  stage = lambda s: progress(f"== compare: {s} ({time.time() - start:.0f}s elapsed)")

  stage(f"1/4 train {len(family.members)} members")
  data_config = _family_data(family)
  data_dir = os.path.join(out_dir, "data")
  if data_config is not None:
    members_lib.prepare_shared_data(data_config, data_dir, progress)
  results = []
  for spec in family.members:
    if train_only is not None and spec.name not in train_only:
      continue
    results.append(members_lib.train_member(
        spec, out_dir, data_dir, data_config, heldout_tokens=family.heldout_tokens,
        heldout_seed=family.heldout_seed, progress=progress))
  timing["train_seconds"] = time.time() - start
  if train_only is not None:
    return None

  t0 = time.time()
  ok = [m for m in results if m.error is None]
  stage(f"2/4 evaluate the tasks on {len(ok)} members")
  losses = {}
  for m in ok:
    try:
      losses[m.name] = solved_tasks(m.best.workdir, m.best.step, names, pairs=family.eval_pairs,
                                    target=family.primary_target, progress=progress)
    except Exception as e:  # noqa: BLE001
      m.error = f"task evaluation: {type(e).__name__}: {e}"
      progress(f"compare: member {m.name} FAILED: {m.error}")
  ok = [m for m in ok if m.error is None]
  solved = {n: [t for t in names if losses[n][t] <= family.primary_target] for n in losses}
  common = [t for t in names if all(t in solved[m.name] for m in ok)] if ok else []
  progress(f"compare: {len(common)} tasks solved by all {len(ok)} members: "
           f"{', '.join(common) or '-'}")
  timing["task_eval_seconds"] = time.time() - t0

  t0 = time.time()
  stage(f"3/4 prune {len(ok)} members on {len(common)} tasks")
  records = {}
  for m in ok if common else []:
    try:
      records[m.name] = pruning.prune_member(
          m.best.workdir, m.best.step, common, family.prune, family.sweep_targets,
          viewer=family.viewer, progress=lambda line, n=m.name: progress(f"  [{n}] {line}"))
    except Exception as e:  # noqa: BLE001
      m.error = f"pruning: {type(e).__name__}: {e}"
      progress(f"compare: member {m.name} FAILED: {m.error}")
  timing["prune_seconds"] = time.time() - t0

  stage("4/4 report")
  report = build_report(family, name, results, losses, solved, common, records, out_dir)
  timing["total_seconds"] = time.time() - start
  report["timing"] = timing
  report_lib.write_report(report, out_dir)
  return report


def _circuits_of(record: dict, common: list[str], family: FamilyConfig) -> dict:
  """The member's circuits on the compared tasks, each entry with its failure flags."""
  out = {}
  for task in common:
    if task not in record["tasks"]:
      continue
    t = json.loads(json.dumps(record["tasks"][task]))
    t["primary"]["flags"] = analysis.failure_flags(t["primary"], family.primary_target,
                                                   family.miss_tolerance)
    for target, e in t["sweep"].items():
      e["flags"] = analysis.failure_flags(e, float(target), family.miss_tolerance)
    out[task] = t
  return out


def build_report(family: FamilyConfig, name: str, results: list, losses: dict, solved: dict,
                 common: list[str], records: dict, out_dir: str) -> dict:
  """The report dict (see :mod:`sparsejax.compare.report`) from the stages' results."""
  rows, analysed = [], []
  for m in results:
    row = m.to_dict()
    best = m.best
    row.update({"heldout_loss": best.heldout_loss if best else None,
                "total_params": best.total_params if best else None,
                "l0": best.l0 if best else None, "workdir": best.workdir if best else None,
                "tasks_solved": len(solved[m.name]) if m.name in solved else None,
                "solved": solved.get(m.name), "task_losses": losses.get(m.name)})
    rec = records.get(m.name)
    if rec is not None and m.error is None:
      row["circuits"] = _circuits_of(rec, common, family)
      row["unsolved_by_pruner"] = rec.get("unsolved")
      index = os.path.join(best.workdir, "prune", "viewer", "index.html")
      if os.path.exists(index):
        row["viewer"] = os.path.relpath(index, out_dir)
      analysed.append(analysis.MemberResult(m.name, m.kind, best.heldout_loss,
                                            best.total_params, best.l0, row["circuits"]))
    rows.append(row)
  report = {"name": name, "family": {
      "primary_target": family.primary_target, "targets": list(family.sweep_targets),
      "tasks": family.tasks, "eval_pairs": family.eval_pairs,
      "heldout_tokens": family.heldout_tokens, "miss_tolerance": family.miss_tolerance,
      "prune": dataclasses.asdict(family.prune), "pruning_api": pruning.API},
      "members": rows, "tasks_compared": common, "method": METHOD}
  if analysed:
    report["analysis"] = analysis.analyse(analysed, family.sweep_targets, family.primary_target,
                                          miss_tolerance=family.miss_tolerance)
    report["headline"] = report["analysis"]["headline"]
    kinds = [m.kind for m in analysed]
    if kinds.count("sparse") < 1 or kinds.count("dense") < 2:
      report["note"] = "the ratio needs at least one sparse and two dense members"
  elif not any(m.error is None for m in results):
    report["note"] = "no member was trained"
  elif not common:
    report["note"] = "no task is solved by every member"
  else:
    report["note"] = "no member was pruned"
  report.setdefault("headline", {k: None for k in (
      "edges", "edges_with_failures", "nodes", "nodes_with_failures", "essential_edges",
      "essential_edges_with_failures")})
  return report
