"""The paper's model family, defined in ``sparsejax/configs/csp.py`` (its variants are listed
there).

  --config=experiments/configs/csp.py:4x                     e = 4, pfrac 1/4, afrac 0.25 (8 sites)
  --config=experiments/configs/csp.py:4x,dense               the dense baseline of the same shape
"""

from sparsejax.configs.csp import get_config  # noqa: F401 -- what --config= loads
