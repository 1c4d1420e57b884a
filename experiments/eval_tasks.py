"""Loss and accuracy of a trained run on the 20 Python tasks (test split).

  python experiments/eval_tasks.py --workdir=runs/tiny [--tasks=all] [--pairs=200] [--out=...]

Prints a table and writes JSON (default: WORKDIR/task_eval.json).
"""

import os
import interrupt_guard  # noqa: F401 -- first: Ctrl-C while importing is one line
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from absl import flags  # noqa: E402

from sparsejax import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run directory.")
_TASKS = flags.DEFINE_string("tasks", "all", "Comma-separated task names, or 'all'.")
_PAIRS = flags.DEFINE_integer("pairs", 200, "Test pairs per task.", lower_bound=1)
_SPLIT = flags.DEFINE_enum("split", "test", ["train", "test"], "Which split to score.")
_OUT = flags.DEFINE_string("out", None, "JSON output path (default WORKDIR/task_eval.json).")
_TARGET = flags.DEFINE_float("target_loss", 0.15, "Loss at or below which a task counts solved.")
flags.mark_flags_as_required(["workdir"])


def main():
  from sparsejax.pipeline import check_task_names
  from sparsejax.tasks import evaluation as task_eval
  from sparsejax.tasks import generators as tasks
  from sparsejax.train.runs import load_run
  from sparsejax.utils.files import atomic_write_json, check_writable_dir
  names = check_task_names(tasks.resolve_names(_TASKS.value))
  out = _OUT.value or os.path.join(_WORKDIR.value, "task_eval.json")
  run = load_run(_WORKDIR.value)
  check_writable_dir(os.path.dirname(os.path.abspath(out)), "--out")  # before the work
  batches = task_eval.task_batches(names, run.tokenizer, n_pairs=_PAIRS.value, split=_SPLIT.value,
                                   max_len=run.config.model.block_size)
  results = task_eval.evaluate(run.graphdef, run.params, run.buffers, batches)
  print(f"run {run.workdir} at step {run.step}, {_SPLIT.value} split")
  print(task_eval.format_table(results, _TARGET.value))
  atomic_write_json(out, {"step": run.step, "split": _SPLIT.value, "tasks": results}, indent=2)
  print(f"wrote {out}")


if __name__ == "__main__":
  cli.run(main)
