"""Exact top-k by magnitude without sorting and without branches, for weights and activations.

The k-th largest |x| is found by a threshold search on the float bit pattern: for non-negative
IEEE floats the bit pattern, read as an integer, is monotone in the value, so

    t* = max { t in [0, bits(+inf)] : count(bits(|x|) >= t) >= k }

is the bit pattern of the k-th largest magnitude. Each search pass tests p candidate thresholds
with **one variadic reduction** (p counters per slice, the input read once: XLA fuses the key
computation, the p compares and the p sums into one kernel, where p separate reductions or one
broadcasted (n, p) comparison are materialised), so a pass shrinks the range (p + 1)-fold. The
default p depends on the backend (:func:`default_candidates`). No sort, no gather, no
``lax.cond``: ``jax.lax.top_k`` falls back to a full sort on GPU for k > 16 and all-gathers a
sharded matrix; here it is only the test oracle (and the small-k helper behind the per-neuron
minimum, where k = j <= 16 takes XLA's fast path).

Ties go to the lowest row-major index (``lax.top_k``'s order), exactly k entries are selected,
and no data-dependent branch decides how:

* **Rows (AbsTopK).** For 16-bit dtypes the key of an entry is one int32 with the magnitude bits
  high and the *reversed* column index low, ``(bits(|x|) << s) | (W - 1 - col)``: all keys of a
  row are distinct, a larger key is a larger magnitude or an equal one further left, and
  ``key >= t*`` keeps exactly k. For float32 the two parts do not fit one int32, so the search
  runs twice — magnitudes, then the reversed column among the entries tied at the threshold —
  which is the same order, branch-free.
* **Whole matrices (weights).** The entries tied at the threshold are always ranked (row counts,
  a running count over rows, then one row): one extra pass, no ``lax.cond`` (on XLA:GPU a
  conditional copies its predicate to the host and waits).
* **Many matrices at once** (:func:`topk_masks_many`, the weight projection): one loop whose every
  pass counts all matrices (under FSDP, one batched all-reduce per pass), optionally warm-started
  from the previous step's thresholds and stopped as soon as every count is exact.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

Array = jax.Array

# Largest bit pattern of a finite-or-infinite non-negative value, per dtype. NaN magnitudes are
# clamped to +inf (they are kept first; training stops on non-finite loss anyway).
_INF_BITS = {
    jnp.dtype(jnp.float32): 0x7F800000,
    jnp.dtype(jnp.bfloat16): 0x7F80,
    jnp.dtype(jnp.float16): 0x7C00,
}
_INT_VIEW = {
    jnp.dtype(jnp.float32): jnp.int32,
    jnp.dtype(jnp.bfloat16): jnp.int16,
    jnp.dtype(jnp.float16): jnp.int16,
}
# Candidate thresholds per pass when none is configured, by backend. XLA:CPU: 3 measured fastest
# per bit resolved (benchmarks/topk.py, BUILD.md). XLA:GPU: 3 measured fastest on an H200 at
# rows of 1024 and 4096 (benchmarks/gpu/abstopk_bench.py; the e=4 step 75.4 -> 69.4 ms against
# 7, benchmarks/RESULTS.md). TPU: 7 (3 bits a pass), not measured yet.
_DEFAULT_CANDIDATES = {"cpu": 3, "gpu": 3, "cuda": 3, "rocm": 3}
_ACCELERATOR_CANDIDATES = 7


def default_candidates(backend: str | None = None) -> int:
  """Candidate thresholds per search pass for ``backend`` (default: JAX's default backend)."""
  backend = jax.default_backend() if backend is None else backend
  return _DEFAULT_CANDIDATES.get(backend, _ACCELERATOR_CANDIDATES)


def resolve_candidates(candidates_per_pass: int | None) -> int:
  return default_candidates() if candidates_per_pass is None else int(candidates_per_pass)


def magnitude_bits(x: Array) -> tuple[Array, int]:
  """Returns (int32 keys monotone in |x|, largest key). bf16/f16 use their own 16-bit pattern."""
  dtype = jnp.dtype(x.dtype)
  if dtype not in _INF_BITS:
    x = x.astype(jnp.float32)
    dtype = jnp.dtype(jnp.float32)
  hi = _INF_BITS[dtype]
  bits = jax.lax.bitcast_convert_type(jnp.abs(x), _INT_VIEW[dtype]).astype(jnp.int32)
  return jnp.minimum(bits, hi), hi


def num_bisection_passes(hi: int, candidates_per_pass: int = 1) -> int:
  """Passes needed to shrink the search range [0, hi] to one key."""
  p = candidates_per_pass
  span, passes = hi, 0
  while span > 0:
    step = -(-span // (p + 1))
    # Worst case of one pass: between two candidates, or above the last one.
    span = max(step - 1, span - p * step)
    passes += 1
  return passes


def count_at_least(keys: Array, cands: Sequence[Array], axes: tuple[int, ...]) -> Array:
  """``count(keys >= c)`` over ``axes`` for each candidate c, stacked on a new leading axis.

  One variadic reduction: the keys (usually computed elementwise from the input in the same
  trace, so they fuse) are read once for all candidates. Candidates broadcast against ``keys``
  with ``axes`` kept as size 1; the counts have ``axes`` kept as size 1 too.
  """
  ops = tuple((keys >= c).astype(jnp.int32) for c in cands)
  zeros = tuple(jnp.zeros((), jnp.int32) for _ in cands)
  sums = jax.lax.reduce(ops, zeros, lambda a, b: tuple(x + y for x, y in zip(a, b)), axes)
  keep = tuple(1 if i in axes else n for i, n in enumerate(keys.shape))
  return jnp.stack([s.reshape(keep) for s in sums])


class Bracket(NamedTuple):
  """A search state per slice: the answer t* is in [lo, top]; n_lo = count(>= lo) >= k >
  n_above = count(>= top + 1)."""

  lo: Array
  top: Array
  n_lo: Array
  n_above: Array


def _narrow(b: Bracket, cands_P: Array, counts_P: Array, k: Array) -> Bracket:
  """The bracket after counting sorted candidates (P leading): counts fall as the candidate
  rises, so the candidates that still keep k form a prefix; the last of them is the new lo, the
  first failing one the new top + 1."""
  p = cands_P.shape[0]
  n_ok = jnp.sum(counts_P >= k[None], axis=0, dtype=jnp.int32)
  at = lambda a, idx: jnp.take_along_axis(a, jnp.clip(idx, 0, p - 1)[None], axis=0)[0]
  return Bracket(lo=jnp.where(n_ok > 0, at(cands_P, n_ok - 1), b.lo),
                 top=jnp.where(n_ok < p, at(cands_P, n_ok) - 1, b.top),
                 n_lo=jnp.where(n_ok > 0, at(counts_P, n_ok - 1), b.n_lo),
                 n_above=jnp.where(n_ok < p, at(counts_P, n_ok), b.n_above))


def _even_candidates(b: Bracket, p: int) -> Array:
  """p thresholds splitting [lo, top] into p + 1 nearly equal parts (P leading)."""
  span = b.top - b.lo
  step = span // (p + 1) + (span % (p + 1) != 0)  # ceil(span / (p + 1)), no overflow
  return jnp.stack([b.lo + jnp.minimum(j * step, span) for j in range(1, p + 1)])


def _start(shape, hi: int, n_all) -> Bracket:
  return Bracket(lo=jnp.zeros(shape, jnp.int32), top=jnp.full(shape, hi, jnp.int32),
                 n_lo=jnp.broadcast_to(jnp.asarray(n_all, jnp.int32), shape),
                 n_above=jnp.zeros(shape, jnp.int32))


def _fixed_search(count_fn, shape, k, hi: int, p: int, n_all) -> Bracket:
  """The bracket after a fixed number of evenly spaced passes (worst case: one key left).

  ``count_fn(cands)`` counts, per slice, the entries whose key is >= each candidate (stacked on
  a leading axis). It builds its operands from the input inside the loop body, so they fuse into
  the pass's reduction instead of being materialised.
  """

  def one_pass(_, b: Bracket) -> Bracket:
    cands = _even_candidates(b, p)
    return _narrow(b, cands, count_fn(list(cands)), k)

  return jax.lax.fori_loop(0, num_bisection_passes(hi, p), one_pass, _start(shape, hi, n_all))


def kth_largest_key(keys: Array, k, *, axes: Sequence[int], hi: int,
                    candidates_per_pass: int | None = 1) -> tuple[Array, Array, Array]:
  """Largest t in [0, hi] with ``count(keys >= t) >= k``, per slice.

  Args:
    keys: non-negative int32 keys, at most ``hi``.
    k: int, broadcastable to the slice shape (``keys`` with ``axes`` reduced, kept as size 1).
    axes: the axes each slice reduces over (all axes for a whole matrix, ``(-1,)`` per row).
    hi: upper bound of the keys.
    candidates_per_pass: thresholds tested per pass (None: the backend default).

  Returns:
    ``(t, count(>= t), count(>= t + 1))``, each with ``axes`` kept as size-1 dims. The two counts
    come from the search's own passes, so ties at t are known without another pass. k must be
    at most the slice size.
  """
  axes = tuple(a % keys.ndim for a in axes)
  shape = tuple(1 if i in axes else n for i, n in enumerate(keys.shape))
  k = jnp.broadcast_to(jnp.asarray(k, jnp.int32), shape)
  n_all = math.prod(keys.shape[a] for a in axes)
  b = _fixed_search(lambda cands: count_at_least(keys, cands, axes), shape, k, hi,
                    resolve_candidates(candidates_per_pass), n_all)
  return b.lo, b.n_lo, b.n_above


def _first_n_per_matrix(flags_RC: Array, n: Array) -> Array:
  """Keeps the first n True entries (row-major) of a matrix: one pass plus work on one row."""
  rows, cols = flags_RC.shape
  row_counts = jnp.sum(flags_RC, axis=1, dtype=jnp.int32)
  before = jnp.cumsum(row_counts) - row_counts  # True entries in earlier rows
  full_rows = jnp.sum(before + row_counts <= n, dtype=jnp.int32)  # a prefix of the rows
  partial = jnp.minimum(full_rows, rows - 1)
  rank_in_row = jnp.cumsum(jax.lax.dynamic_index_in_dim(flags_RC, partial, 0, keepdims=False),
                           dtype=jnp.int32)
  row_id = jax.lax.broadcasted_iota(jnp.int32, (rows, cols), 0)
  in_partial = (row_id == full_rows) & (rank_in_row[None, :] <= n - before[partial])
  return flags_RC & ((row_id < full_rows) | in_partial)


def _as_matrix(x: Array) -> Array:
  return x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(1, -1)


def _first_n(flags: Array, n: Array, axes: tuple[int, ...]) -> Array:
  """Keeps the first n True entries of each slice in row-major order (the tie-break)."""
  if axes == (flags.ndim - 1,):  # rows: rank by a running count along each row
    return flags & (jnp.cumsum(flags, axis=-1, dtype=jnp.int32) <= n)
  if axes == tuple(range(flags.ndim)):  # the whole array: rank rows first, then one row
    return _first_n_per_matrix(_as_matrix(flags), n.reshape(())).reshape(flags.shape)
  raise ValueError(f"top-k slices must be whole arrays or rows, got axes {axes}")


def topk_mask_from_keys(keys: Array, k, *, axes: Sequence[int], hi: int,
                        candidates_per_pass: int | None = None) -> Array:
  """Bool mask selecting exactly min(k, slice size) largest keys per slice, ties to lowest index.

  A slice is either the whole array (``axes`` = all axes) or a row (``axes = (-1,)``). The
  entries tied at the threshold are always ranked (no branch on whether they need to be).
  """
  axes = tuple(sorted(a % keys.ndim for a in axes))
  size = math.prod(keys.shape[a] for a in axes)
  slice_shape = tuple(1 if i in axes else n for i, n in enumerate(keys.shape))
  k = jnp.broadcast_to(jnp.clip(jnp.asarray(k, jnp.int32), 0, size), slice_shape)
  t, _, n_above = kth_largest_key(keys, k, axes=axes, hi=hi,
                                  candidates_per_pass=candidates_per_pass)
  keep_at = _first_n(keys == t, k - n_above, axes)  # k - count(> t) of the entries tied at t
  return ((keys > t) | keep_at) & (k > 0)


def _variadic_count(preds: Sequence[Array], axis: int) -> Array:
  """Stacked ``sum(pred, axis, keepdims)`` of boolean arrays, as one variadic reduction."""
  ops = tuple(q.astype(jnp.int32) for q in preds)
  zeros = tuple(jnp.zeros((), jnp.int32) for _ in preds)
  sums = jax.lax.reduce(ops, zeros, lambda a, b: tuple(x + y for x, y in zip(a, b)), (axis,))
  return jnp.stack([jnp.expand_dims(c, axis) for c in sums])


def row_topk_mask(x: Array, k, *, candidates_per_pass: int | None = None) -> Array:
  """Mask of the k largest |x| of each row (last axis), ties to the lowest column; no branches.

  16-bit dtypes with rows up to 65,536 wide: one search over the tie-free int32 keys
  ``(bits(|x|) << s) | (W - 1 - col)``. Otherwise (float32): a search over the magnitude bits,
  then one over the reversed column among the entries tied at the threshold. ``k`` (1 <= k <=
  W, may be traced) broadcasts against the rows.

  The keys are never built: a candidate key c is compared as ``m > c_hi or (m == c_hi and col
  <= W - 1 - c_lo)``, with m the magnitude bits in x's own width (a free bitcast) and c = (c_hi,
  c_lo), so each pass reads 2 bytes an entry of a bf16 x (XLA would otherwise hoist the
  loop-invariant int32 keys out of the loop, writing them once and reading 4 bytes an entry per
  pass). The comparison stays on integers: a float compare against a subnormal candidate value
  would be flushed to zero on CPUs.
  """
  W = x.shape[-1]
  p = resolve_candidates(candidates_per_pass)
  dtype = jnp.dtype(x.dtype)
  shape = x.shape[:-1] + (1,)
  axis = x.ndim - 1
  k_arr = jnp.broadcast_to(jnp.asarray(k, jnp.int32), shape)
  # One row of column indices, broadcast in each comparison: a full-size iota would be
  # materialised outside the loop and read on every pass.
  col = jax.lax.broadcasted_iota(jnp.int32, (1,) * axis + (W,), axis)
  s = max(1, (W - 1).bit_length())
  if dtype in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)) and s <= 16:
    inf = _INF_BITS[dtype]
    m = jnp.minimum(jax.lax.bitcast_convert_type(jnp.abs(x), jnp.int16), jnp.int16(inf))
    low = (1 << s) - 1

    def at_least(c):  # key >= c, with key = (m << s) | (W - 1 - col)
      c_hi = (c >> s).astype(jnp.int16)
      return (m > c_hi) | ((m == c_hi) & (col <= W - 1 - (c & low)))

    b = _fixed_search(lambda cands: _variadic_count([at_least(c) for c in cands], axis), shape,
                      k_arr, (inf << s) | low, p, W)
    return at_least(b.lo)
  m, hi = magnitude_bits(x.astype(jnp.float32))
  b = _fixed_search(lambda cands: _variadic_count([m >= c for c in cands], axis), shape, k_arr,
                    hi, p, W)
  t = b.lo
  need = k_arr - b.n_above  # >= 1 entries among those tied at t, lowest columns first
  tied = lambda c: (m == t) & (col <= W - 1 - c)  # reversed column >= c
  b2 = _fixed_search(lambda cands: _variadic_count([tied(c) for c in cands], axis), shape, need,
                     W - 1, p, W)
  return (m > t) | tied(b2.lo)


@functools.partial(jax.jit, static_argnames=("axes", "candidates_per_pass"))
def topk_mask(x: Array, k, *, axes: Sequence[int] | None = None,
              candidates_per_pass: int | None = None) -> Array:
  """Mask of the k largest-magnitude entries of ``x`` per slice (default: the whole array).

  Exactly ``min(k, slice size)`` entries are True; among equal magnitudes the lowest row-major
  index wins (the order of ``jax.lax.top_k``). ``k`` may be traced.
  """
  axes = tuple(range(x.ndim)) if axes is None else tuple(a % x.ndim for a in axes)
  if axes == (x.ndim - 1,) and x.ndim > 1:
    k = jnp.clip(jnp.asarray(k, jnp.int32), 0, x.shape[-1])
    return row_topk_mask(x, k, candidates_per_pass=candidates_per_pass) & (k > 0)
  keys, hi = magnitude_bits(x)
  return topk_mask_from_keys(keys, k, axes=axes, hi=hi, candidates_per_pass=candidates_per_pass)


def min_alive_mask(w: Array, j: int, axis: int) -> Array:
  """Mask of the j largest-|w| entries along ``axis``, for every index of the other axis.

  For a Flax kernel of shape (in, out), ``axis=0`` protects each output unit's j largest input
  weights (a column), ``axis=1`` each input unit's j largest output weights (a row). Ties go to the
  lowest index. Uses ``lax.top_k`` with small k (<= 16 takes XLA's fast GPU path).
  """
  if w.ndim != 2:
    raise ValueError(f"min_alive_mask expects a matrix, got shape {w.shape}")
  a = jnp.moveaxis(jnp.abs(w), axis, -1)
  if j >= a.shape[-1]:
    return jnp.ones(w.shape, bool)
  _, idx = jax.lax.top_k(a, j)
  rows = jnp.arange(a.shape[0])[:, None]
  mask = jnp.zeros(a.shape, bool).at[rows, idx].set(True)
  return jnp.moveaxis(mask, -1, axis)


def weight_keys(w: Array, *, min_alive: int = 0, min_alive_axis: int | None = None
                ) -> tuple[Array, int]:
  """(int32 keys, largest key) of the weight projection: magnitude bits, with each unit's
  ``min_alive`` largest entries (see :func:`min_alive_mask`) raised above every magnitude."""
  keys, hi = magnitude_bits(w)
  if min_alive > 0 and min_alive_axis is not None:
    forced = min_alive_mask(w, min_alive, min_alive_axis)
    keys = jnp.where(forced, hi + 1, keys)
    hi = hi + 1
  return keys, hi


@functools.partial(jax.jit, static_argnames=("min_alive", "min_alive_axis", "candidates_per_pass"))
def weight_topk_mask(w: Array, k, *, min_alive: int = 0, min_alive_axis: int | None = None,
                     candidates_per_pass: int | None = None) -> Array:
  """The official weight projection: the k largest |w| of the whole matrix survive.

  With ``min_alive = j > 0``, first each unit along ``min_alive_axis`` (see
  :func:`min_alive_mask`) is guaranteed its j largest entries; those count towards k, and the
  remaining budget goes to the largest of the rest. Exactly min(k, numel) entries are selected.
  """
  keys, hi = weight_keys(w, min_alive=min_alive, min_alive_axis=min_alive_axis)
  return topk_mask_from_keys(keys, k, axes=tuple(range(w.ndim)), hi=hi,
                             candidates_per_pass=candidates_per_pass)


class ManyTopk(NamedTuple):
  """Result of :func:`topk_masks_many`."""

  masks: list  # bool masks, one per input, exactly min(k, numel) True
  thresholds: Array  # (L,) int32: each matrix's threshold key (warm start of the next search)
  passes: Array  # int32 scalar: counting passes the search took


def _guess_candidates(b: Bracket, guess: Array, p: int) -> Array:
  """p sorted thresholds in [lo + 1, top]: p // 2 evenly spaced (so the bracket still shrinks
  (p // 2 + 1)-fold when the guess is wrong) and the rest around ``guess``, spread over the
  guess's expected error: a linear interpolation of the counts across a bracket holding n
  entries is off by about sqrt(n) entries, i.e. a fraction 1 / sqrt(n) of the bracket."""
  p_even = max(1, p // 2)
  even = _even_candidates(b, p_even)
  p_near = p - p_even
  if p_near == 0:
    return even
  n = jnp.maximum(b.n_lo - b.n_above, 1).astype(jnp.float32)
  err = (b.top - b.lo).astype(jnp.float32) / jnp.sqrt(n)
  d = jnp.maximum(jnp.floor(2 * err / p_near), 1).astype(jnp.int32)
  lo, top = b.lo + 1, jnp.maximum(b.top, b.lo + 1)
  g = jnp.clip(guess, lo, top)
  near = jnp.stack([jnp.clip(g + (2 * j - (p_near - 1)) * d // 2, lo, top)
                    for j in range(p_near)])
  return jnp.sort(jnp.concatenate([even, near]), axis=0)


def _interpolated(b: Bracket, k: Array) -> Array:
  """Where count(>= t) = k if counts fell linearly from (lo, n_lo) to (top + 1, n_above)."""
  frac = (b.n_lo - k).astype(jnp.float32) / jnp.maximum(b.n_lo - b.n_above, 1).astype(jnp.float32)
  width = (b.top - b.lo + 1).astype(jnp.float32)
  return b.lo + jnp.floor(frac * width).astype(jnp.int32)


def topk_masks_many(keys: Sequence[Array], ks: Array, *, hi: int,
                    candidates_per_pass: int | None = None,
                    warm: Array | None = None) -> ManyTopk:
  """Exact top-k masks of many whole arrays in one search loop (the weight projection).

  Every pass counts p candidates in every array (one variadic reduction each; under a mesh the L
  scalar all-reduces of a pass are combined). Ties at a threshold go to the lowest row-major
  index, ranked unconditionally.

  Args:
    keys: L int32 key arrays (any shapes), each <= ``hi``.
    ks: (L,) int32 entries to keep per array (clipped to [0, numel]).
    hi: upper bound of every key.
    candidates_per_pass: thresholds per array per pass (None: the backend default).
    warm: (L,) int32 thresholds of the previous search, or None. With it, the search starts its
      first pass around them, later passes around the linear interpolation of the bracket's
      counts, and the loop stops as soon as every array's count is exact — a data-dependent trip
      count. Half of the candidates stay evenly spaced, so a miss (a threshold that moved far)
      only costs passes, never exactness: the loop's bound is the worst case of those alone.
      Without it: a fixed number of evenly spaced passes (no data-dependent control flow).

  Returns:
    :class:`ManyTopk`.
  """
  L = len(keys)
  sizes = jnp.asarray([x.size for x in keys], jnp.int32)
  ks = jnp.clip(jnp.asarray(ks, jnp.int32).reshape(L), 0, sizes)
  p = resolve_candidates(candidates_per_pass)
  fixed = num_bisection_passes(hi, p)

  def counts(cands_PL):
    return jnp.stack([count_at_least(x, [cands_PL[j, i] for j in range(p)],
                                     tuple(range(x.ndim))).reshape(p)
                      for i, x in enumerate(keys)], axis=1)

  start = _start((L,), hi, sizes)
  if warm is None:
    b = jax.lax.fori_loop(0, fixed, lambda _, b: _narrow(
        b, _even_candidates(b, p), counts(_even_candidates(b, p)), ks), start)
    passes = jnp.int32(fixed)
  else:
    warm = jnp.asarray(warm, jnp.int32).reshape(L)
    limit = num_bisection_passes(hi, max(1, p // 2))  # the evenly spaced half alone suffices

    def done(b):  # the count at lo is exactly k, or one key is left (ties at it), or k = 0
      return (b.n_lo == ks) | (b.lo >= b.top) | (ks == 0)

    def body(carry):
      b, n = carry
      guess = jnp.where(n == 0, warm, _interpolated(b, ks))
      cands = _guess_candidates(b, guess, p)
      cands = jnp.where(done(b)[None], b.lo[None], cands)  # finished arrays stay put
      return _narrow(b, cands, counts(cands), ks), n + 1

    b, passes = jax.lax.while_loop(lambda c: (c[1] < limit) & ~jnp.all(done(c[0])), body,
                                   (start, jnp.int32(0)))
  masks = []
  for i, x in enumerate(keys):
    t = b.lo[i]
    at = x == t
    at_RC = _as_matrix(at)
    n_at = jnp.sum(at_RC, dtype=jnp.int32)
    # k − count(> t) of the tied entries; count(> t) = count(>= t) − count(== t).
    keep_at = _first_n_per_matrix(at_RC, ks[i] - b.n_lo[i] + n_at).reshape(x.shape)
    masks.append(((x > t) | keep_at) & (ks[i] > 0))
  return ManyTopk(masks, b.lo, passes)


ABSTOPK_KERNELS = ("xla", "pallas", "auto")


def use_pallas_rows(kernel: str, shape, dtype) -> bool:
  """Whether ``abs_topk(kernel=...)`` selects with the Pallas kernel for rows of this shape:
  "pallas" wherever it applies (16-bit rows, power-of-two width; interpreted on CPU), "xla"
  never, "auto" on a process with a single GPU. (The kernel has no partitioning rule: under a
  multi-device ``jit`` XLA would gather its input onto every device, so "auto" keeps the XLA
  search there until the kernel is wrapped in a ``shard_map``.)"""
  from sparsejax.sparse import topk_pallas

  if kernel not in ABSTOPK_KERNELS:
    raise ValueError(f"AbsTopK kernel must be one of {ABSTOPK_KERNELS}, got {kernel!r}")
  if kernel == "xla" or (kernel == "auto" and (jax.default_backend() != "gpu"
                                               or jax.device_count() != 1)):
    return False
  return topk_pallas.supported(tuple(shape), dtype)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _row_topk_mask_jit(x: Array, k: int, candidates_per_pass: int | None) -> Array:
  # Compiled once per shape, k and candidates: a model called eagerly (analysis, tests) would
  # otherwise retrace and recompile the search's loop on every call (0.2 s per site on a CPU).
  # Under an outer jit it is inlined like any nested call.
  return row_topk_mask(x, k, candidates_per_pass=candidates_per_pass)


def abs_topk(x: Array, k: int, *, candidates_per_pass: int | None = None,
             kernel: str = "xla") -> Array:
  """AbsTopK activation sparsity: keep the k largest-|x| entries of each row (last axis).

  Kept entries keep their sign and value; the rest become 0. The gradient flows only through the
  kept entries (the selection itself is not differentiated). The mask is named ``abstopk_mask``
  and the output ``abstopk`` for rematerialisation policies (``jax.ad_checkpoint``): a policy
  that saves the mask never recomputes the selection. ``kernel`` picks the selection
  (:func:`use_pallas_rows`): the XLA search or the one-read Pallas kernel
  (:mod:`sparsejax.sparse.topk_pallas`); both give the same mask.
  """
  if k >= x.shape[-1]:
    return x
  with jax.named_scope("abstopk"):
    if use_pallas_rows(kernel, x.shape, x.dtype):
      from sparsejax.sparse import topk_pallas

      mask = topk_pallas.row_topk_mask(jax.lax.stop_gradient(x), int(k))
    else:
      mask = _row_topk_mask_jit(x, int(k), candidates_per_pass)
    mask = jax.lax.stop_gradient(mask)
    mask = checkpoint_name(mask, "abstopk_mask")
    return checkpoint_name(jnp.where(mask, x, jnp.zeros((), x.dtype)), "abstopk")
