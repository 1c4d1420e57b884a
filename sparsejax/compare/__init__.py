"""The paper's headline experiments: sparse vs dense circuits at matched pretraining loss (Fig. 2,
the "16x" claim) and the capability-interpretability frontier (Fig. 3).

  family.py    FamilyConfig / MemberSpec: the members, their learning-rate sweeps, one pruning setup
  members.py   training a member's sweep, its held-out loss and sizes (total params, L0)
  pruning.py   the adapter to the pruning pipeline, and the multi-target discretization
  analysis.py  failure flags, geometric means, matched-loss interpolation, the frontier's lines
  report.py    report.json, CSVs, PNG plots (optional matplotlib), index.html
  runner.py    run_family: the stages end to end, resumable

The binary is ``experiments/compare.py``; the families are in ``experiments/configs/compare.py``.
"""
