"""The whole loop on a fresh machine: train the tiny model, score the 20 tasks, prune every task the
model solves, and write the circuit viewer. Prints the path of the viewer's index page.

  python experiments/run_all.py [--workdir=runs/tiny] [--config=experiments/configs/tiny.py]
      [--prune_config=experiments/configs/prune.py:quick]

Each stage resumes: rerunning skips finished training and reuses cached node means.
"""

import os
import interrupt_guard  # noqa: F401 -- first: Ctrl-C while importing is one line
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from sparsejax import cli  # noqa: E402

CONFIGS = Path(__file__).resolve().parent / "configs"
_CONFIG = config_flags.DEFINE_config_file("config", str(CONFIGS / "tiny.py"), "Training config.")
_PRUNE = config_flags.DEFINE_config_file("prune_config", f"{CONFIGS / 'prune.py'}:quick",
                                         "Pruning config.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/tiny", "Run directory.")
_PAIRS = flags.DEFINE_integer("eval_pairs", 200, "Test pairs per task for the task table.",
                              lower_bound=1)


def main():
  from sparsejax import pipeline
  from sparsejax.circuits import prune
  from sparsejax.circuits import prune_run
  from sparsejax.train import run_config
  from sparsejax.tasks import generators as tasks
  from sparsejax.train import loop as trainer
  from sparsejax.train.runs import load_run
  from sparsejax.utils.errors import UserError
  progress = lambda line: print(line, flush=True)
  start = time.time()
  stage = lambda name: progress(f"== {name} ({time.time() - start:.0f}s elapsed)")
  cfg = run_config.RunConfig.from_dict(_CONFIG.value.to_dict())
  prune_cfg = run_config.build(prune.PruneConfig, _PRUNE.value.to_dict(), "prune_config")
  workdir = _WORKDIR.value
  stage("1/4 train")
  trainer.train(cfg, workdir, progress=progress)
  stage("2/4 evaluate the 20 tasks")
  results = pipeline.evaluate_tasks(workdir, list(tasks.TASK_NAMES), pairs=_PAIRS.value,
                                    target_loss=prune_cfg.target_loss, progress=progress)
  solved = [n for n, r in results.items() if r["loss"] <= prune_cfg.target_loss]
  if not solved:
    raise UserError(f"no task reaches the target loss {prune_cfg.target_loss}: nothing to prune "
                    "(train longer, e.g. --config.train.steps, on another --workdir)")
  stage(f"3/4 prune the {len(solved)} solved tasks")
  result = prune_run.Pruner(load_run(workdir), prune_cfg, progress).prune_tasks(solved)
  prune_dir = os.path.join(workdir, "prune")
  prune_run.write_outputs(result, prune_dir)
  progress(prune_run.format_summary(result))
  stage("4/4 viewer")
  index = pipeline.build_viewer(workdir, prune_dir, progress=progress)
  progress(f"done in {time.time() - start:.0f}s")
  print(f"viewer: {os.path.abspath(index)}")


if __name__ == "__main__":
  cli.run(main)
