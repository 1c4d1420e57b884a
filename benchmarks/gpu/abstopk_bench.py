"""AbsTopK on (rows, width) activations: our branch-free search with 1 / 3 / 7 / 15 candidate
thresholds per pass against ``jax.lax.top_k`` and ``approx_max_k``, forward and forward +
backward, as ms and as a multiple of a copy of the same array.

  python benchmarks/gpu/abstopk_bench.py [--rows=65536] [--widths=1024,4096] [--afrac=0.25]

Decides ``sparsejax.sparse.topk``'s per-backend candidate count and whether a fused kernel is
the next step. Ends with ``abstopk_best_candidates: p`` (fastest forward + backward at the widest
width).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from common import device_line, median_time  # noqa: E402
from sparsejax.sparse import topk  # noqa: E402

_ROWS = flags.DEFINE_integer("rows", 65536, "Rows (tokens).")
_WIDTHS = flags.DEFINE_list("widths", ["1024", "4096"], "Row widths.")
_AFRAC = flags.DEFINE_float("afrac", 0.25, "Fraction kept per row.")
_CANDIDATES = flags.DEFINE_list("candidates", ["1", "3", "7", "15"], "Candidates per pass.")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "Activation dtype.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed repetitions (median).")


def lax_topk(x, k):
  _, idx = jax.lax.top_k(jnp.abs(x), k)
  mask = jnp.zeros(x.shape, bool).at[jnp.arange(x.shape[0])[:, None], idx].set(True)
  return jnp.where(mask, x, 0)


def approx_topk(x, k):  # approximate: recall target 0.95 (TPU only honours it)
  _, idx = jax.lax.approx_max_k(jnp.abs(x), k)
  mask = jnp.zeros(x.shape, bool).at[jnp.arange(x.shape[0])[:, None], idx].set(True)
  return jnp.where(mask, x, 0)


def main(argv):
  del argv
  print(device_line())
  best = None
  for width in map(int, _WIDTHS.value):
    x = jax.random.normal(jax.random.key(0), (_ROWS.value, width), _DTYPE.value)
    g = jax.random.normal(jax.random.key(1), x.shape, x.dtype)
    k = int(_AFRAC.value * width)
    copy = jax.jit(lambda x: x + 1)
    t_copy = median_time(copy, x, repeats=_REPEATS.value)
    methods = {f"bisect c={p}": (lambda p: lambda x: topk.abs_topk(x, k, candidates_per_pass=p))(
        int(p)) for p in _CANDIDATES.value}
    methods["lax.top_k"] = lambda x: lax_topk(x, k)
    methods["approx_max_k"] = lambda x: approx_topk(x, k)
    ref = np.asarray(jax.jit(methods["lax.top_k"])(x))
    print(f"\n{_ROWS.value} x {width} {_DTYPE.value}, k = {k}; copy {t_copy * 1e3:.2f} ms")
    print(f"{'method':<16} {'fwd ms':>8} {'÷ copy':>7} {'fwd+bwd ms':>11} {'÷ copy':>7} exact")
    times = {}
    for name, fn in methods.items():
      fwd = jax.jit(fn)
      both = jax.jit(jax.grad(lambda x, fn=fn: jnp.sum((fn(x) * g).astype(jnp.float32))))
      try:
        exact = bool(np.array_equal(np.asarray(fwd(x)), ref))
        t_f = median_time(fwd, x, repeats=_REPEATS.value)
        t_b = median_time(both, x, repeats=_REPEATS.value)
      except Exception as e:  # a method this backend cannot run
        print(f"{name:<16} failed: {str(e).splitlines()[0][:100]}")
        continue
      times[name] = t_b
      print(f"{name:<16} {t_f * 1e3:>8.2f} {t_f / t_copy:>7.1f} {t_b * 1e3:>11.2f} "
            f"{t_b / t_copy:>7.1f} {exact}")
    ours = {n: t for n, t in times.items() if n.startswith("bisect")}
    if ours:
      best = min(ours, key=ours.get).split("=")[1]
  print(f"abstopk_best_candidates: {best}")


if __name__ == "__main__":
  app.run(main)
