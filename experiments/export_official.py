"""Exports a sparsejax run as an official circuit_sparsity model directory.

  python experiments/export_official.py --workdir=runs/tiny --out=export/tiny [--step=N] \
      [--format=pt|safetensors]

Writes OUT/final_model.pt (torch's zip format, written without torch; loads with the official
``load_model`` / ``torch.load(weights_only=True)``) or final_model.safetensors, OUT/beeg_config.json
(official fields only) and sparsejax's side files, which import_official.py reads back. The logic
lives in ``sparsejax.interop.run_io``.
"""

import interrupt_guard  # noqa: F401 -- first: Ctrl-C while importing is one line
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from absl import flags  # noqa: E402

from sparsejax import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A run directory.")
_OUT = flags.DEFINE_string("out", None, "Directory to write (new or empty).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_FORMAT = flags.DEFINE_enum("format", "pt", ["pt", "safetensors"], "Checkpoint file format.")
flags.mark_flags_as_required(["workdir", "out"])


def main():
  from sparsejax.interop.run_io import export_run
  export_run(_WORKDIR.value, _OUT.value, step=_STEP.value, fmt=_FORMAT.value,
             progress=lambda line: print(line, flush=True))


if __name__ == "__main__":
  cli.run(main)
