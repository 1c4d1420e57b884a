"""Sparse vs dense circuits at matched pretraining loss (Fig. 2, the "16x" claim) and the
capability-interpretability frontier (Fig. 3), for a family of models.

  python experiments/compare.py --config=experiments/configs/compare.py:tiny --out=runs/compare

Trains (or resumes) every member's learning-rate sweep into OUT/members/NAME/lr_LR (normal run
directories), evaluates the tasks, prunes every member on the tasks all members solve, and writes
OUT/index.html, report.json, the CSVs and the plots. Rerunning skips what is done. The logic is in
``sparsejax.compare``. Ends with ``dense_over_sparse_edges_at_matched_loss: X``.
"""

import interrupt_guard  # noqa: F401 -- first: Ctrl-C while importing is one line
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from sparsejax import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", f"{Path(__file__).resolve().parent / 'configs' / 'compare.py'}:tiny",
    "Family config (experiments/configs/compare.py:tiny|tiny_l0|paper|smoke).")
_OUT = flags.DEFINE_string("out", "runs/compare", "Report directory (members are trained inside).")
_TRAIN_ONLY = flags.DEFINE_list("train_only", None, "Only train these members, then stop (to "
                                "spread a family over machines sharing --out).")


def main():
  from sparsejax.compare import report as report_lib
  from sparsejax.compare.family import FamilyConfig
  from sparsejax.compare.runner import run_family
  family = FamilyConfig.from_dict(_CONFIG.value.to_dict())
  if _TRAIN_ONLY.value:
    for name in _TRAIN_ONLY.value:
      family.member(name)  # an unknown name is an error before anything runs
  progress = lambda line: print(line, flush=True)
  report = run_family(family, _OUT.value, name=family.name, train_only=_TRAIN_ONLY.value,
                      progress=progress)
  if report is None:
    print(f"trained {', '.join(_TRAIN_ONLY.value)}; rerun without --train_only for the report")
    return
  print(report_lib.format_table(report))
  print(f"report: {Path(_OUT.value).resolve() / 'index.html'}")
  h = report["headline"]
  fmt = lambda x: "n/a" if x is None else f"{x:.2f}"
  if report.get("note"):
    print(f"note: {report['note']}")
  print(f"dense_over_sparse_edges_at_matched_loss_with_failures: {fmt(h['edges_with_failures'])}")
  print(f"dense_over_sparse_edges_at_matched_loss: {fmt(h['edges'])}")


if __name__ == "__main__":
  cli.run(main)
