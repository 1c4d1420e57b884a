"""Pruning settings (sparsejax.circuits.prune.PruneConfig); variants are the library's presets
(``sparsejax.circuits.prune.PRESETS``): default, "quick" (the README main job, sized for 2 CPU
cores), "paper" (the paper's budget, for an accelerator).

  python experiments/prune.py --workdir=runs/tiny --config=experiments/configs/prune.py:quick

Budget per task = candidates × steps × batch_pairs (member-pair-steps) for the node search, the
same for the edge search with edge_candidates × edge_steps; the shuffled-label controls add one
member's steps per task to each.
"""

import dataclasses

import ml_collections

from sparsejax.circuits.prune import PRESETS
from sparsejax.circuits.prune import preset


def get_config(arg: str = "default"):
  if arg not in PRESETS:
    raise ValueError(f"prune.py: unknown variant {arg!r}; valid: {', '.join(PRESETS)}")
  return ml_collections.ConfigDict(dataclasses.asdict(preset(arg)))
