"""Loss and accuracy of a trained run on the 20 Python tasks, on the test and ood splits.

  python experiments/eval_tasks.py --workdir=runs/tiny [--tasks=all] [--pairs=200]
      [--splits=test,ood] [--out=...]

Prints a table (loss and accuracy per split, solved on the first split, the tasks' flags) and
writes JSON (default: WORKDIR/task_eval.json).
"""

import interrupt_guard  # noqa: F401 -- first: Ctrl-C while importing is one line
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from absl import flags  # noqa: E402

from sparsejax import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run directory.")
_TASKS = flags.DEFINE_string("tasks", "all", "Comma-separated task names, or 'all'.")
_PAIRS = flags.DEFINE_integer("pairs", 200, "Pairs per task and split.", lower_bound=1)
_SPLITS = flags.DEFINE_list("splits", ["test", "ood"],
                            "Splits to score (train, test, ood); the first decides 'solved'.")
_OUT = flags.DEFINE_string("out", None, "JSON output path (default WORKDIR/task_eval.json).")
_TARGET = flags.DEFINE_float("target_loss", 0.15, "Loss at or below which a task counts solved.")
flags.mark_flags_as_required(["workdir"])


def main():
  from sparsejax import pipeline
  from sparsejax.tasks import generators as tasks
  from sparsejax.utils.errors import ConfigError
  names = tasks.resolve_names(_TASKS.value)
  bad = [s for s in _SPLITS.value if s not in tasks.SPLITS]
  if bad or not _SPLITS.value:
    raise ConfigError(f"--splits: unknown split(s) {', '.join(bad) or '(none given)'}; valid: "
                      f"{', '.join(tasks.SPLITS)}")
  pipeline.evaluate_tasks(_WORKDIR.value, names, pairs=_PAIRS.value, target_loss=_TARGET.value,
                          splits=tuple(_SPLITS.value), out=_OUT.value,
                          progress=lambda line: print(line, flush=True))
  print(f"wrote {_OUT.value or Path(_WORKDIR.value) / 'task_eval.json'}")


if __name__ == "__main__":
  cli.run(main)
