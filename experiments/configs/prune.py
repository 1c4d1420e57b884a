"""Pruning settings, defined in ``sparsejax/configs/prune.py``: the library's presets default,
"quick" (the README main job, sized for 2 CPU cores) and "paper" (the paper's budget).

  python experiments/prune.py --workdir=runs/tiny --config=experiments/configs/prune.py:quick
"""

from sparsejax.configs.prune import get_config  # noqa: F401 -- what --config= loads
