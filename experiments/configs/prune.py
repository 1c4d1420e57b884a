"""Pruning settings (sparsejax.prune.PruneConfig); variants: default, "quick" (the README main job).

  python experiments/prune.py --workdir=runs/tiny --config=experiments/configs/prune.py:quick
"""

import dataclasses

import ml_collections

from sparsejax.circuits.prune import PruneConfig

VARIANTS = {
    "default": {},
    # Small enough for 2 CPU cores in a few minutes: fewer, larger steps (τ must cross 0 from
    # the init bias 0.1 within the budget, so the learning-rate centre is 10x the paper's).
    # val_pairs == test_pairs: every evaluation has one batch size. On a CPU one mask-learning
    # call per sequence length pays (a call costs its FLOPs; padding is FLOPs).
    "quick": dict(steps=100, candidates=1, train_pairs=96, val_pairs=48, test_pairs=48,
                  batch_pairs=4, mean_tokens=16384, random_circuits=2, chunk_steps=50, lr=3e-2,
                  k_coef=1e-4, bisect_rtol=0.03, group_by_length=True),
}


def get_config(arg: str = "default"):
  if arg not in VARIANTS:
    raise ValueError(f"prune.py: unknown variant {arg!r}; valid: {', '.join(VARIANTS)}")
  values = dataclasses.asdict(PruneConfig())
  values.update(VARIANTS[arg])
  return ml_collections.ConfigDict(values)
