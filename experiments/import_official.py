"""Imports an official circuit_sparsity model directory as a sparsejax run directory.

  python experiments/import_official.py --src=models/csp_yolo2 --workdir=runs/csp_yolo2 \
      [--tokenizer_dir=tinypython]  [--eval_tokens=100000] [--reader=safe|torch]

SRC holds ``beeg_config.json`` and ``final_model.pt`` as downloaded (sparsejax downloads nothing).
The checkpoint is read without running code from it. Prints what happened to every key and each
matrix's weight density; the run then works with eval_tasks.py, prune.py, view.py and
``sparsejax.train.runs.load_run``. The logic lives in ``sparsejax.interop.run_io``.
"""

import interrupt_guard  # noqa: F401 -- first: Ctrl-C while importing is one line
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from absl import flags  # noqa: E402

from sparsejax import cli  # noqa: E402

_SRC = flags.DEFINE_string("src", None, "Official model directory (beeg_config.json + "
                           "final_model.pt, .safetensors or .npz).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to create (new or empty).")
_TOKENIZER = flags.DEFINE_string(
    "tokenizer_dir", None, "Local tinypython_2k directory (encoder.json + vocab.bpe), or a "
    "sparsejax tokenizer.json (or its directory). Default: SRC/tokenizer.json if present, else "
    "none (the run then works on token ids only).")
_EVAL_TOKENS = flags.DEFINE_integer("eval_tokens", 100_000, "Held-out tokens of the built-in "
                                    "generator to write (mean ablation reads them).")
_READER = flags.DEFINE_enum("reader", "safe", ["safe", "torch"], "safe: the torch-free "
                            "allow-list reader; torch: torch.load(weights_only=True).")
flags.mark_flags_as_required(["src", "workdir"])


def main():
  from sparsejax.interop.run_io import import_official
  import_official(_SRC.value, _WORKDIR.value, tokenizer_dir=_TOKENIZER.value,
                  eval_tokens=_EVAL_TOKENS.value, reader=_READER.value,
                  progress=lambda line: print(line, flush=True))


if __name__ == "__main__":
  cli.run(main)
