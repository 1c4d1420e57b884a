"""Prunes a trained run to one circuit per task (vmapped over tasks × candidates).

  python experiments/prune.py --workdir=runs/tiny [--tasks=all] [--target_loss=0.15] \
      [--out=runs/tiny/prune] [--config=experiments/configs/prune.py:quick --config.steps=300]

The search (``--config.search=pbt|random``, ``candidates``, ``rounds``, ``steps``,
``batch_pairs``), the bisection (``--config.bisect_on=raw|calibrated``), the clean-up
(``cleanup_rounds``, ``cleanup_batch``, ``cleanup_exhaustive``) and the edge pruning (``edges``,
``edge_candidates``, ``edge_rounds``, ``edge_steps``) are config fields; ``:paper`` is the paper's
budget, for an accelerator.

Writes OUT/circuits/<task>.json and OUT/summary.json and prints the summary table. The logic lives
in ``sparsejax.circuits.prune_run``.
"""

import os
import interrupt_guard  # noqa: F401 -- first: Ctrl-C while importing is one line
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from sparsejax import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", str(Path(__file__).resolve().parent / "configs" / "prune.py"),
    "Pruning config file (experiments/configs/prune.py[:quick]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run directory.")
_TASKS = flags.DEFINE_string("tasks", "all", "Comma-separated task names, or 'all'.")
_TARGET = flags.DEFINE_float("target_loss", None, "Task loss the circuits must reach "
                             "(default: the config's, 0.15).")
_OUT = flags.DEFINE_string("out", None, "Output directory (default WORKDIR/prune).")
flags.mark_flags_as_required(["workdir"])


def main():
  from sparsejax.circuits import prune
  from sparsejax.circuits import prune_run
  from sparsejax.pipeline import check_task_names
  from sparsejax.train import run_config
  from sparsejax.tasks import generators as tasks
  from sparsejax.train.runs import load_run
  from sparsejax.utils.files import check_writable_dir
  values = _CONFIG.value.to_dict()
  if _TARGET.value is not None:
    values["target_loss"] = _TARGET.value
  cfg = run_config.build(prune.PruneConfig, values, "config")
  names = check_task_names(tasks.resolve_names(_TASKS.value))
  run = load_run(_WORKDIR.value)
  run.require_tokenizer("pruning")  # a run imported on token ids stops here, in one line
  out = _OUT.value or os.path.join(_WORKDIR.value, "prune")
  check_writable_dir(out, "--out")  # before the pruning work, not after it
  progress = lambda line: print(line, flush=True)
  progress(f"prune: run {run.workdir} at step {run.step}; {len(names)} tasks; target loss "
           f"{cfg.target_loss}")
  result = prune_run.Pruner(run, cfg, progress).prune_tasks(names)
  prune_run.write_outputs(result, out)
  print(prune_run.format_summary(result))
  print(f"wrote {out}/summary.json and {len(result.circuits)} circuits in {out}/circuits")


if __name__ == "__main__":
  cli.run(main)
