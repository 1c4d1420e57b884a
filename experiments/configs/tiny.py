"""The CPU default (the README main job's model), defined in ``sparsejax/configs/tiny.py``.

  python experiments/train.py --config=experiments/configs/tiny.py --workdir=runs/tiny
"""

from sparsejax.configs.tiny import get_config  # noqa: F401 -- what --config= loads
