"""Trains a weight-sparse GPT. The logic lives in ``sparsejax.trainer``.

  python experiments/train.py --config=experiments/configs/tiny.py --workdir=runs/tiny \
      [--config.train.steps=1000 --config.sparsity.target_density=0.0625 ...]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from sparsejax.config import ConfigError  # noqa: E402
from sparsejax.run_config import RunConfig  # noqa: E402
from sparsejax.trainer import train  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (.py with get_config).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created if missing).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    cfg = RunConfig.from_dict(_CONFIG.value.to_dict())
    train(cfg, _WORKDIR.value, progress=lambda line: print(line, flush=True))
  except (ConfigError, ValueError, OSError) as e:
    logging.error("%s", e)
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
