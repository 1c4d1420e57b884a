import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.sparse import topk


def oracle_mask(x, k, axes=None):
  """Reference: jax.lax.top_k (lowest index first among equal values)."""
  x = jnp.asarray(x)
  if axes is None:
    flat = jnp.abs(x).ravel()
    _, idx = jax.lax.top_k(flat, k)
    return np.asarray(jnp.zeros(flat.shape, bool).at[idx].set(True).reshape(x.shape))
  _, idx = jax.lax.top_k(jnp.abs(x), k)
  out = np.zeros(x.shape, bool)
  np.put_along_axis(out, np.asarray(idx), True, axis=-1)
  return out


def make_data(kind, shape, seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=shape).astype(np.float32)
  if kind == "ties":
    x = np.round(x, 1)  # many equal magnitudes, both signs
  elif kind == "zeros":
    x[rng.random(shape) < 0.6] = 0.0
  elif kind == "constant":
    x[:] = -1.5
  return x


@pytest.mark.parametrize("kind", ["normal", "ties", "zeros", "constant"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (33, 40)])
def test_whole_matrix_topk_matches_lax_top_k(kind, shape):
  x = make_data(kind, shape, seed=shape[0])
  n = x.size
  for k in sorted({1, 2, n // 7, n // 2, n - 1, n} - {0} - set(range(n + 1, 3))):
    mask = np.asarray(topk.topk_mask(jnp.asarray(x), k))
    assert mask.sum() == k
    np.testing.assert_array_equal(mask, oracle_mask(x, k), err_msg=f"k={k}")


def test_k_zero_and_k_above_size():
  x = jnp.asarray(make_data("normal", (5, 6), 0))
  assert not topk.topk_mask(x, 0).any()
  assert topk.topk_mask(x, 1000).all()


@pytest.mark.parametrize("candidates", [2, 3, 7])
def test_multi_candidate_passes_agree(candidates):
  x = make_data("ties", (31, 29), 3)
  for k in (1, 100, 450):
    np.testing.assert_array_equal(
        np.asarray(topk.topk_mask(jnp.asarray(x), k, candidates_per_pass=candidates)),
        oracle_mask(x, k))


@pytest.mark.parametrize("candidates", [1, 2, 5])
def test_kth_largest_key_exhaustive_small_range(candidates):
  """Bisection finds max{t : count(keys >= t) >= k} for every k, including worst-case ranges."""
  rng = np.random.default_rng(candidates)
  for hi in (1, 2, 3, 10, 64, 255):
    keys = rng.integers(0, hi + 1, size=40)
    ks = np.arange(1, 41)
    # One row per k: every k is answered by one call.
    got, _, _ = topk.kth_largest_key(jnp.asarray(np.tile(keys, (40, 1)), jnp.int32), ks[:, None],
                                     axes=(1,), hi=hi, candidates_per_pass=candidates)
    got = got[:, 0]
    want = np.sort(keys)[::-1][ks - 1]
    np.testing.assert_array_equal(np.asarray(got), want, err_msg=f"hi={hi}")


def test_traced_k_under_jit():
  x = jnp.asarray(make_data("normal", (16, 16), 1))
  f = jax.jit(lambda x, k: topk.topk_mask(x, k))
  for k in (3, 50, 200):
    assert int(f(x, jnp.int32(k)).sum()) == k


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("kind", ["normal", "ties", "zeros"])
def test_rowwise_topk_matches_lax_top_k(dtype, kind):
  x = jnp.asarray(make_data(kind, (4, 9, 24), 5)).astype(dtype)
  for k in (1, 6, 23):
    mask = np.asarray(topk.topk_mask(x, k, axes=(-1,)))
    assert (mask.sum(-1) == k).all()
    np.testing.assert_array_equal(mask, oracle_mask(x, k, axes=(-1,)))


def test_abs_topk_keeps_k_per_row_and_values():
  x = jnp.asarray(make_data("ties", (3, 5, 32), 7))
  y = topk.abs_topk(x, 8)
  assert (np.count_nonzero(np.asarray(y), axis=-1) <= 8).all()
  mask = oracle_mask(x, 8, axes=(-1,))
  np.testing.assert_array_equal(np.asarray(y), np.where(mask, np.asarray(x), 0))


def test_abs_topk_gradient_flows_only_through_kept_entries():
  x = jnp.asarray(make_data("normal", (6, 20), 9))
  c = jnp.asarray(np.random.default_rng(0).normal(size=(6, 20)).astype(np.float32))
  grad = jax.grad(lambda x: jnp.sum(topk.abs_topk(x, 5) * c))(x)
  mask = oracle_mask(x, 5, axes=(-1,))
  np.testing.assert_array_equal(np.asarray(grad), np.where(mask, np.asarray(c), 0.0))


def test_abs_topk_full_width_is_identity():
  x = jnp.ones((2, 4))
  assert topk.abs_topk(x, 4) is x


@pytest.mark.parametrize("axis", [0, 1])
def test_min_alive_protects_each_unit(axis):
  w = make_data("normal", (40, 24), 11)
  j, k = 4, 180
  mask = np.asarray(topk.weight_topk_mask(jnp.asarray(w), k, min_alive=j, min_alive_axis=axis))
  assert mask.sum() == k
  assert (mask.sum(axis=axis) >= j).all()
  # Without the rule some units would have fewer than j (so the test is not vacuous).
  assert (oracle_mask(w, k).sum(axis=axis) < j).any()
  # The forced entries are each unit's j largest; the rest of the budget goes to the largest others.
  forced = np.asarray(topk.min_alive_mask(jnp.asarray(w), j, axis))
  order = np.argsort(-np.abs(w), axis=axis, kind="stable")
  np.testing.assert_array_equal(np.take_along_axis(forced, order, axis=axis)[:j].all()
                                if axis == 0 else
                                np.take_along_axis(forced, order, axis=axis)[:, :j].all(), True)
  assert forced.sum() == j * w.shape[1 - axis]
  rest = np.where(forced, 0.0, np.abs(w))
  expected = forced | oracle_mask(rest, k - forced.sum())
  np.testing.assert_array_equal(mask, expected)


def test_min_alive_budget_smaller_than_forced_still_selects_k():
  w = make_data("normal", (10, 30), 2)
  mask = topk.weight_topk_mask(jnp.asarray(w), 50, min_alive=4, min_alive_axis=0)  # 120 forced
  assert int(mask.sum()) == 50


# ------------------------------------------------------------------ branch-free selection
def _primitives(jaxpr) -> set:
  """Names of every primitive in a jaxpr, nested jaxprs included."""
  out = set()
  for eqn in jaxpr.eqns:
    out.add(eqn.primitive.name)
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      out |= _primitives(sub)
  return out


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
@pytest.mark.parametrize("width", [5, 100, 1024])
@pytest.mark.parametrize("candidates", [1, 15])
def test_row_topk_is_exact_with_heavy_ties(dtype, width, candidates):
  rng = np.random.default_rng(width + candidates)
  # Few distinct magnitudes, both signs, zeros: most rows need the lowest-index tie-break.
  x = (rng.integers(-3, 4, size=(6, width)) * 0.5).astype(np.float32)
  x[0] = 0.0
  x = jnp.asarray(x).astype(dtype)
  for k in sorted({1, width // 3, width - 1} - {0}):
    mask = np.asarray(topk.row_topk_mask(x, k, candidates_per_pass=candidates))
    assert (mask.sum(-1) == k).all(), k
    np.testing.assert_array_equal(mask, oracle_mask(x, k, axes=(-1,)), err_msg=f"k={k}")


def test_selection_has_no_conditionals():
  """AbsTopK and the projection contain no lax.cond (on XLA:GPU each one is a host round trip)."""
  x = jnp.ones((4, 32), jnp.bfloat16)
  w = jnp.ones((16, 8))
  for fn, args in [(lambda x: topk.abs_topk(x, 8), (x,)),
                   (lambda x: topk.topk_mask(x.astype(jnp.float32), 8, axes=(-1,)), (x,)),
                   (lambda w: topk.weight_topk_mask(w, 20, min_alive=2, min_alive_axis=0), (w,)),
                   (lambda w: topk.topk_masks_many([w, w[:4]], jnp.array([20, 3]), hi=2**31 - 1,
                                                   warm=jnp.array([5, 6])).masks, (w,))]:
    prims = _primitives(jax.make_jaxpr(fn)(*args).jaxpr)
    assert "cond" not in prims, prims


def _many_oracle(arrays, ks):
  return [oracle_mask(a, k) if k else np.zeros(a.shape, bool) for a, k in zip(arrays, ks)]


@pytest.mark.parametrize("candidates", [1, 2, 3, 7])
def test_topk_masks_many_matches_one_matrix_at_a_time(candidates):
  rng = np.random.default_rng(candidates)
  arrays = [rng.normal(size=(13, 7)).astype(np.float32),
            np.round(rng.normal(size=(20, 9)), 1).astype(np.float32),  # ties
            rng.normal(size=(31,)).astype(np.float32),
            np.zeros((4, 4), np.float32)]  # all tied at 0
  ks = [40, 100, 0, 9]
  keys = [topk.magnitude_bits(jnp.asarray(a))[0] for a in arrays]
  for warm in (None, jnp.zeros(4, jnp.int32)):
    out = topk.topk_masks_many(keys, jnp.asarray(ks), hi=0x7F800000,
                               candidates_per_pass=candidates, warm=warm)
    for got, want, k in zip(out.masks, _many_oracle(arrays, ks), ks):
      assert int(np.asarray(got).sum()) == k
      np.testing.assert_array_equal(np.asarray(got), want)


def test_warm_start_takes_fewer_passes_and_a_bracket_miss_stays_exact():
  rng = np.random.default_rng(0)
  arrays = [rng.normal(size=(64, 48)).astype(np.float32) for _ in range(3)]
  ks = jnp.asarray([300, 50, 1000])
  keys = [topk.magnitude_bits(jnp.asarray(a))[0] for a in arrays]
  search = jax.jit(lambda keys, warm: topk.topk_masks_many(keys, ks, hi=0x7F800000,
                                                           candidates_per_pass=7, warm=warm))
  cold = topk.topk_masks_many(keys, ks, hi=0x7F800000, candidates_per_pass=7)
  fixed = int(cold.passes)
  assert fixed == topk.num_bisection_passes(0x7F800000, 7)
  # Warm from the exact thresholds of slightly different weights (the next optimizer step).
  moved = [a * (1 + 1e-3 * rng.normal(size=a.shape)).astype(np.float32) for a in arrays]
  moved_keys = [topk.magnitude_bits(jnp.asarray(a))[0] for a in moved]
  warm = search(moved_keys, cold.thresholds)
  assert int(warm.passes) < fixed / 2, (int(warm.passes), fixed)
  # A miss: thresholds far off (the magnitudes of other matrices, or 0, or +inf).
  for bad in (jnp.zeros(3, jnp.int32), jnp.full(3, 0x7F800000, jnp.int32),
              cold.thresholds[::-1]):
    out = search(moved_keys, bad)
    for got, a, k in zip(out.masks, moved, np.asarray(ks)):
      np.testing.assert_array_equal(np.asarray(got), oracle_mask(a, int(k)))
  for got, a, k in zip(warm.masks, moved, np.asarray(ks)):
    np.testing.assert_array_equal(np.asarray(got), oracle_mask(a, int(k)))
