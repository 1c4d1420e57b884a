"""Compile time, kernel count and host gaps of the dense and full-sparse training steps, plus a
``jax.profiler`` trace of a few steps of each (open ``$OUT/trace`` in Perfetto / TensorBoard).

Host overlap: a step timed alone (dispatch, run, wait) vs the mean of steps dispatched back to
back; the difference is the host time (dispatch, kernel launches, waits) that pipelining hides.
Something inside the step that waits for the host (on XLA:GPU a ``lax.cond`` copies its
predicate to the host; a loop with a data-dependent trip count does so every iteration) stops
the host from running ahead, so the overlap shrinks towards zero and the device idles for it.

  python benchmarks/gpu/profile_step.py [--profile_e=4] [--profile_batch=32] [--out=DIR]

Ends with ``profile_sparse_overlap_ms: X`` (host time hidden per full-sparse step).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import jax  # noqa: E402
from absl import app, flags  # noqa: E402

import hlo_cost  # noqa: E402
import roofline  # noqa: E402
from common import device_line  # noqa: E402
from sparsejax.sparse import optim  # noqa: E402
from sparsejax.train import step as train_step  # noqa: E402

_E_PROFILE = flags.DEFINE_integer("profile_e", 4, "Expansion factor of csp.py.")
_BATCH_PROFILE = flags.DEFINE_integer("profile_batch", 32, "Sequences per step.")
_OUT = flags.DEFINE_string("out", None, "Directory for the traces (default: no trace).")
_STEPS = flags.DEFINE_integer("steps", 10, "Steps per measurement.")


def main(argv):
  del argv
  print(device_line())
  print(f"{'variant':<12} {'compile s':>9} {'kernels/step':>12} {'alone ms':>9} "
        f"{'pipelined ms':>12} {'overlap ms':>10}")
  overlap = None
  for variant in ("dense", "full sparse"):
    cfg = roofline.run_config(_E_PROFILE.value, variant)
    steps = cfg.train.steps
    tx = optim.sparse_adam(cfg.optim, cfg.sparsity, steps)
    graphdef, state = train_step.create_train_state(cfg.model, tx, seed=0)
    step = train_step.make_train_step(graphdef, tx, sparsity=cfg.sparsity, total_steps=steps)
    tokens = jax.random.randint(jax.random.key(0),
                                (_BATCH_PROFILE.value, cfg.train.seq_len + 1), 0,
                                cfg.model.vocab_size)
    t0 = time.perf_counter()
    compiled = step.lower(state, tokens).compile()
    t_compile = time.perf_counter() - t0
    kernels = hlo_cost.program_cost(compiled, dynamic_trip_count=6).kernels_executed
    for _ in range(3):
      state, m = compiled(state, tokens)
    jax.block_until_ready(m)
    alone = []
    for _ in range(_STEPS.value):
      t0 = time.perf_counter()
      state, m = compiled(state, tokens)
      jax.block_until_ready(m)
      alone.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(_STEPS.value):
      state, m = compiled(state, tokens)
    jax.block_until_ready(m)
    piped = (time.perf_counter() - t0) / _STEPS.value
    t_alone = statistics.median(alone)
    overlap = (t_alone - piped) * 1e3
    print(f"{variant:<12} {t_compile:>9.1f} {kernels:>12} {t_alone * 1e3:>9.2f} "
          f"{piped * 1e3:>12.2f} {overlap:>10.2f}")
    if _OUT.value:
      jax.profiler.start_trace(os.path.join(_OUT.value, variant.replace(" ", "_")))
      for _ in range(3):
        state, m = compiled(state, tokens)
      jax.block_until_ready(m)
      jax.profiler.stop_trace()
  print(f"profile_sparse_overlap_ms: {overlap:.2f}")


if __name__ == "__main__":
  app.run(main)
