"""Builds the HTML circuit viewer for a pruned run (opens offline in any browser).

  python experiments/view.py --workdir=runs/tiny [--prune_dir=runs/tiny/prune] [--out=...]
"""

import os
import interrupt_guard  # noqa: F401 -- first: Ctrl-C while importing is one line
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from absl import flags  # noqa: E402

from sparsejax import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run.")
_PRUNE_DIR = flags.DEFINE_string("prune_dir", None, "Output of prune.py (default WORKDIR/prune).")
_OUT = flags.DEFINE_string("out", None, "Viewer directory (default PRUNE_DIR/viewer).")
flags.mark_flags_as_required(["workdir"])


def main():
  from sparsejax.pipeline import build_viewer, read_summary
  from sparsejax.utils.files import check_writable_dir
  prune_dir = _PRUNE_DIR.value or os.path.join(_WORKDIR.value, "prune")
  read_summary(prune_dir)  # no summary (or a bad one): say so before loading the model
  check_writable_dir(_OUT.value or os.path.join(prune_dir, "viewer"), "--out")
  index = build_viewer(_WORKDIR.value, prune_dir, _OUT.value,
                       progress=lambda line: print(line, flush=True))
  print(f"viewer: {os.path.abspath(index)}")


if __name__ == "__main__":
  cli.run(main)
