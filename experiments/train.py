"""Trains (or resumes) a weight-sparse GPT. The logic lives in ``sparsejax.trainer``.

  python experiments/train.py --config=experiments/configs/tiny.py --workdir=runs/tiny \
      [--config.train.steps=1000 --config.sparsity.target_density=0.0625 ...]
  python experiments/train.py --config=experiments/configs/csp.py:4x --workdir=runs/csp4x

Running it again on the same workdir resumes from the latest checkpoint.
"""

import interrupt_guard  # noqa: F401 -- first: Ctrl-C while importing is one line
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from sparsejax import cli  # noqa: E402
from sparsejax.train import distributed  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (.py with get_config).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created if missing).")
_ALLOW_CHANGE = flags.DEFINE_bool("allow_config_change", False,
                                  "Resume even if the config differs from the saved one.")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() (also done "
                               "automatically under SLURM / TPU pods / a coordinator address).")
flags.mark_flags_as_required(["config", "workdir"])


def main():
  distributed.maybe_initialize_distributed(force=_MULTIHOST.value)
  from sparsejax.train.run_config import RunConfig
  from sparsejax.train.loop import train
  cfg = RunConfig.from_dict(_CONFIG.value.to_dict())
  train(cfg, _WORKDIR.value, progress=lambda line: print(line, flush=True),
        allow_config_change=_ALLOW_CHANGE.value)


if __name__ == "__main__":
  cli.run(main)
