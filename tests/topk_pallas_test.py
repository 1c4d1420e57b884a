"""The Pallas AbsTopK kernel (interpreted on CPU) gives exactly the XLA search's mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.model.config import GPTConfig
from sparsejax.sparse import topk, topk_pallas
from sparsejax.utils.errors import ConfigError


def rows(kind, shape, seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=shape).astype(np.float32)
  if kind == "ties":
    x = np.round(x)  # few distinct magnitudes, both signs: the column decides
  elif kind == "zeros":
    x[rng.random(shape) < 0.7] = 0.0
  elif kind == "special":  # needs rows of >= 4
    x[0, :3] = np.nan
    x[0, 3] = -np.inf
    x[1, :] = -0.0
    x[2, ::2] = 1e-40  # subnormal in float32, flushed to 0 in bfloat16
  return x


@pytest.mark.parametrize("dtype,kind,width", [
    (jnp.bfloat16, "normal", 2), (jnp.bfloat16, "ties", 16), (jnp.bfloat16, "zeros", 256),
    (jnp.bfloat16, "special", 16), (jnp.bfloat16, "ties", 256), (jnp.float16, "ties", 16),
    (jnp.float16, "special", 256)])
def test_pallas_rows_equal_the_xla_search_and_lax_top_k(dtype, kind, width):
  x = jnp.asarray(rows(kind, (8, width), width), dtype)
  for k in sorted({1, width // 4, width - 1} - {0}):
    got = np.asarray(topk_pallas.row_topk_mask(x, k))
    np.testing.assert_array_equal(got, np.asarray(topk.row_topk_mask(x, k)), err_msg=f"k={k}")
    assert (got.sum(-1) == k).all()
    if kind != "special":  # lax.top_k orders NaN differently; the search ranks NaN as +inf
      _, idx = jax.lax.top_k(jnp.abs(x).astype(jnp.float32), k)
      want = np.zeros(x.shape, bool)
      np.put_along_axis(want, np.asarray(idx), True, axis=-1)
      np.testing.assert_array_equal(got, want, err_msg=f"k={k}")


def test_rows_spanning_several_blocks_and_leading_axes():
  # 3 x 40 rows of 128: blocks of 32 rows (4096 elements), 120 rows -> 8-row blocks.
  x = jnp.asarray(np.random.default_rng(3).normal(size=(3, 40, 128)), jnp.bfloat16)
  got = topk_pallas.row_topk_mask(x, 19)
  assert got.shape == x.shape
  np.testing.assert_array_equal(np.asarray(got), np.asarray(topk.row_topk_mask(x, 19)))


def test_supported_shapes_and_clear_errors():
  assert topk_pallas.supported((4, 1024), jnp.bfloat16)
  assert not topk_pallas.supported((4, 1024), jnp.float32)  # the key needs a 16-bit magnitude
  assert not topk_pallas.supported((4, 96), jnp.bfloat16)  # Triton blocks are powers of two
  with pytest.raises(ValueError, match="power-of-two"):
    topk_pallas.row_topk_mask(jnp.zeros((2, 96), jnp.bfloat16), 3)
  with pytest.raises(ValueError, match="k must be"):
    topk_pallas.row_topk_mask(jnp.zeros((2, 8), jnp.bfloat16), 9)


def test_abs_topk_kernel_choice_same_values_and_gradient():
  x = jnp.asarray(np.random.default_rng(5).normal(size=(4, 6, 64)), jnp.bfloat16)
  g = jnp.asarray(np.random.default_rng(6).normal(size=x.shape), jnp.bfloat16)
  loss = lambda kernel: lambda x: jnp.sum((topk.abs_topk(x, 16, kernel=kernel) * g)
                                          .astype(jnp.float32))
  for kernel in ("pallas", "auto"):
    np.testing.assert_array_equal(np.asarray(topk.abs_topk(x, 16, kernel=kernel)),
                                  np.asarray(topk.abs_topk(x, 16, kernel="xla")))
    np.testing.assert_array_equal(np.asarray(jax.grad(loss(kernel))(x)),
                                  np.asarray(jax.grad(loss("xla"))(x)))
  # The kernel where it applies; the XLA search (same result) for float32 and odd widths.
  assert topk.use_pallas_rows("pallas", x.shape, x.dtype)
  assert not topk.use_pallas_rows("pallas", x.shape, jnp.float32)
  assert not topk.use_pallas_rows("auto", x.shape, x.dtype)  # this process has no GPU
  x32 = x.astype(jnp.float32)
  np.testing.assert_array_equal(np.asarray(topk.abs_topk(x32, 16, kernel="pallas")),
                                np.asarray(topk.abs_topk(x32, 16, kernel="xla")))
  with pytest.raises(ValueError, match="kernel must be one of"):
    topk.abs_topk(x, 16, kernel="triton")


def test_config_checks_the_kernel_name():
  assert GPTConfig().abstopk_kernel == "auto"
  with pytest.raises(ConfigError, match="abstopk_kernel"):
    GPTConfig(abstopk_kernel="cuda")
