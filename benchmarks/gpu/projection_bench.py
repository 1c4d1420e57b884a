"""The weight projection of a whole model (every projected matrix, one search loop) against the
AdamW update of the same parameters: cold (fixed passes) and warm-started searches, for several
candidate counts per pass. Goal: projection <= 25 % of the AdamW update.

  python benchmarks/gpu/projection_bench.py [--e=4] [--candidates=3,7,15]

Parameters are the csp.py model's at initialisation; the warm start is the previous step's
thresholds, as in training (the weights are moved by one AdamW step of random gradients).
Ends with ``projection_over_adamw: X`` (the fastest configuration).
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import dataclasses  # noqa: E402

import jax  # noqa: E402
import optax  # noqa: E402
from absl import app, flags  # noqa: E402

from sparsejax.configs import csp  # noqa: E402
from common import device_line, median_time  # noqa: E402
from sparsejax.sparse import optim  # noqa: E402
from sparsejax.sparse import sparsity as sp  # noqa: E402
from sparsejax.train import step as train_step  # noqa: E402
from sparsejax.train.run_config import RunConfig  # noqa: E402

_E = flags.DEFINE_integer("e", 4, "Expansion factor of csp.py.")
_CANDIDATES = flags.DEFINE_list("candidates", ["3", "7", "15"], "Candidates per pass.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed repetitions (median).")


def main(argv):
  del argv
  print(device_line())
  cfg = RunConfig.from_dict(csp.get_config(f"{_E.value}x").to_dict())
  _, params, _ = train_step.init_model(cfg.model, seed=0)
  grads = jax.tree.map(lambda p: 1e-3 * jax.random.normal(jax.random.key(1), p.shape), params)
  # The AdamW update alone: the chain without the projection.
  adam = optim.sparse_adam(cfg.optim, dataclasses.replace(cfg.sparsity, enabled=False), 1000)
  adam_state = adam.init(params)

  @jax.jit
  def adam_step(params, state):
    u, state = adam.update(grads, state, params)
    return optax.apply_updates(params, u), state

  t_adam = median_time(adam_step, params, adam_state, repeats=_REPEATS.value)
  n = sum(x.size for x in jax.tree.leaves(params))
  print(f"csp.py:{_E.value}x, {n / 1e6:.1f}M parameters; AdamW update {t_adam * 1e3:.2f} ms")
  moved, _ = adam_step(params, adam_state)
  step = cfg.train.steps  # annealing over: k at the target
  print(f"{'search':<8} {'candidates':>10} {'ms':>8} {'÷ AdamW':>8} {'passes':>7}")
  best = None
  for p in map(int, _CANDIDATES.value):
    for warm in (False, True):
      s_cfg = dataclasses.replace(cfg.sparsity, candidates_per_pass=p, warm_start=warm)
      fn = jax.jit(lambda w, t, s_cfg=s_cfg: sp.projection_masks(w, s_cfg, step, step, warm=t))
      thresholds = fn(params, None).thresholds if warm else None
      out = fn(moved, thresholds)
      t = median_time(fn, moved, thresholds, repeats=_REPEATS.value)
      ratio = t / t_adam
      best = ratio if best is None else min(best, ratio)
      print(f"{'warm' if warm else 'cold':<8} {p:>10} {t * 1e3:>8.2f} {ratio:>8.2f} "
            f"{int(out.passes):>7}")
  print(f"projection_over_adamw: {best:.2f}")


if __name__ == "__main__":
  app.run(main)
