import jax
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
