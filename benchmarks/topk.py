"""Exact weight top-k: our bit-pattern bisection vs ``jax.lax.top_k``, at k = 1 % of a matrix.

All build the full projection (the kept entries of the matrix, the rest zero) and are checked for
nnz == k. Two ``lax.top_k`` formulations are timed: from the indices (scatter a mask; the faster
one on XLA CPU) and from the values (threshold = k-th value, jaxpruner style). The final line,
``topk_speedup_vs_lax: X``, is for the largest size against the faster of the two.

  python benchmarks/topk.py [--sizes=1048576,4194304,16777216] [--density=0.01] [--repeats=5]
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from absl import app, flags

from common import device_line, median_time
from sparsejax.sparse.topk import weight_topk_mask

_SIZES = flags.DEFINE_list("sizes", ["1048576", "4194304", "16777216"], "Matrix sizes (elements).")
_DENSITY = flags.DEFINE_float("density", 0.01, "Fraction of entries kept.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repetitions (median reported).")
_CANDIDATES = flags.DEFINE_integer("candidates_per_pass", 1, "Bisection thresholds per pass.")


@functools.partial(jax.jit, static_argnames="k")
def project_lax_indices(w, k):
  _, idx = jax.lax.top_k(jnp.abs(w).ravel(), k)
  mask = jnp.zeros(w.size, bool).at[idx].set(True).reshape(w.shape)
  return jnp.where(mask, w, 0.0)


@functools.partial(jax.jit, static_argnames="k")
def project_lax_values(w, k):
  values, _ = jax.lax.top_k(jnp.abs(w).ravel(), k)
  return jnp.where(jnp.abs(w) >= values[-1], w, 0.0)  # ties at the threshold may keep > k


@functools.partial(jax.jit, static_argnames="candidates")
def project_bisect(w, k, candidates):
  return jnp.where(weight_topk_mask(w, k, candidates_per_pass=candidates), w, 0.0)


def main(argv):
  del argv
  print(device_line())
  print(f"{'elements':>10} {'shape':>13} {'k':>8} {'bisection ms':>13} {'top_k idx ms':>13} "
        f"{'top_k val ms':>13} {'speedup':>8}")
  speedup = None
  for size in map(int, _SIZES.value):
    rows = 1 << (size.bit_length() - 1) // 2
    shape = (rows, size // rows)
    w = jax.random.normal(jax.random.key(0), shape, jnp.float32)
    k = int(_DENSITY.value * size)
    ours = project_bisect(w, jnp.int32(k), _CANDIDATES.value)
    ref = project_lax_indices(w, k)
    assert int(jnp.count_nonzero(ours)) == k == int(jnp.count_nonzero(ref)), "nnz != k"
    assert bool(jnp.all(ours == ref)), "projections differ"
    t_ours = median_time(project_bisect, w, jnp.int32(k), _CANDIDATES.value,
                         repeats=_REPEATS.value)
    t_idx = median_time(project_lax_indices, w, k, repeats=_REPEATS.value)
    t_val = median_time(project_lax_values, w, k, repeats=max(1, _REPEATS.value // 2), warmup=1)
    speedup = min(t_idx, t_val) / t_ours
    print(f"{size:>10} {str(shape):>13} {k:>8} {t_ours * 1e3:>13.1f} {t_idx * 1e3:>13.1f} "
          f"{t_val * 1e3:>13.1f} {speedup:>8.1f}")
  print("nnz == k and identical projections: checked for every size")
  print(f"topk_speedup_vs_lax: {speedup:.1f}")


if __name__ == "__main__":
  app.run(main)
