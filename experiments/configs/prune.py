"""Pruning settings (sparsejax.circuits.prune.PruneConfig); variants: default, "quick" (the README
main job, sized for 2 CPU cores), "paper" (the paper's budget, for an accelerator).

  python experiments/prune.py --workdir=runs/tiny --config=experiments/configs/prune.py:quick

Budget per task = candidates × steps × batch_pairs (member-pair-steps) for the node search, the
same for the edge search with edge_candidates × edge_steps; the shuffled-label controls add one
member's steps per task to each.
"""

import dataclasses

import ml_collections

from sparsejax.circuits.prune import PruneConfig

VARIANTS = {
    "default": {},
    # Small enough for 2 CPU cores in a few minutes: 2 candidates per task in 2 rounds of 50
    # larger steps (τ must cross 0 from the init bias 0.1 within the budget, so the learning-rate
    # centre is 10x the paper's, and the size penalty 3x), a coarse between-round fitness, one
    # edge-mask learner per circuit, one clean-up round of 8 candidates. val_pairs ==
    # test_pairs and fitness_pairs = 0: every evaluation has one batch size. On 2 cores a compile
    # costs as much as hundreds of member-steps, so training runs as one call per stage
    # (group_by_length off) and evaluations trim tokens per chunk.
    "quick": dict(steps=100, rounds=2, candidates=2, train_pairs=96, val_pairs=48, test_pairs=48,
                  batch_pairs=4, mean_tokens=16384, random_circuits=2, chunk_steps=50, lr=3e-2,
                  k_coef=3e-4, fitness_rtol=0.15, bisect_grid=6, bisect_rtol=0.05,
                  edge_candidates=1, edge_rounds=1, edge_steps=100, edge_max_edges=8192,
                  cleanup_rounds=1, cleanup_batch=8, cleanup_exhaustive=False),
    # The paper's budget (paper-notes §3, prune_v4: 768 CARBS trials, 64 pairs per step, 48
    # epochs): 256 members per task in 8 rounds of PBT, 1536 steps of 64 pairs (48 epochs of 2048
    # training pairs), the edge search at a quarter of that, exhaustive clean-up. For an
    # accelerator: the memory plan splits the members into as few vmapped calls as fit.
    "paper": dict(steps=1536, rounds=8, candidates=256, batch_pairs=64, train_pairs=2048,
                  val_pairs=256, test_pairs=512, chunk_steps=64, fitness_pairs=64,
                  edge_candidates=64, edge_rounds=4, edge_steps=768, cleanup_rounds=500,
                  cleanup_batch=64, cleanup_exhaustive=True, random_circuits=10),
}


def get_config(arg: str = "default"):
  if arg not in VARIANTS:
    raise ValueError(f"prune.py: unknown variant {arg!r}; valid: {', '.join(VARIANTS)}")
  values = dataclasses.asdict(PruneConfig())
  values.update(VARIANTS[arg])
  return ml_collections.ConfigDict(values)
