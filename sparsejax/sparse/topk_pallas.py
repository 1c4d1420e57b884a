"""AbsTopK's row selection as one Pallas kernel: each row read once, its mask written once.

The XLA search (:func:`sparsejax.sparse.topk.row_topk_mask`) re-reads every row once per pass
(about 13 passes for a bf16 row at 3 candidates a pass): on an H200 it costs 8.7 × a copy of its
input at width 1024 and 5.9 × at 4096 (``benchmarks/RESULTS.md``), and its loop adds thousands of
small kernels to a step. Here a block of rows is loaded into registers once; the search runs on
the loaded block; only the int8 mask goes back to memory.

The search is the same tie-free one: for a 16-bit dtype the key of an entry is one non-negative
int32, ``(bits(|x|) << s) | (W - 1 - col)`` with ``s = log2(W)``, so every key of a row is
distinct, the larger key is the larger magnitude or an equal one further left, and the answer

    t* = max { t : count(key >= t) >= k }

is built bit by bit from the top: ``t |= 1 << b`` whenever that still keeps k. ``key >= t*``
then keeps exactly k entries, ties to the lowest column, the same mask as ``row_topk_mask``
(tested for equality in interpret mode on CPU, ``tests/topk_pallas_test.py``).

Only for 16-bit inputs with power-of-two rows of 2 ... 65,536 (Triton blocks are powers of two;
the key must fit 31 bits); :func:`supported` says whether a shape qualifies, and the caller falls
back to the XLA search otherwise.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

Array = jax.Array

_MAG_MASK = {jnp.dtype(jnp.bfloat16): 0x7FFF, jnp.dtype(jnp.float16): 0x7FFF}
_INF_BITS = {jnp.dtype(jnp.bfloat16): 0x7F80, jnp.dtype(jnp.float16): 0x7C00}
# Elements a program holds (rows × width): 4096 keeps the block in registers at 4 warps.
_BLOCK_ELEMENTS = 4096


def supported(shape: tuple[int, ...], dtype) -> bool:
  """Whether :func:`row_topk_mask` handles rows of this shape and dtype."""
  if not shape or jnp.dtype(dtype) not in _MAG_MASK:
    return False
  w = shape[-1]
  return 2 <= w <= 65536 and w & (w - 1) == 0


def _rows_per_block(rows: int, width: int) -> int:
  r = max(1, _BLOCK_ELEMENTS // width)
  while rows % r:
    r //= 2
  return r


def _kernel(x_ref, mask_ref, *, k: int, width: int, inf: int, mag_mask: int):
  x = x_ref[...]
  s = (width - 1).bit_length()
  m = jax.lax.bitcast_convert_type(x, jnp.int16).astype(jnp.int32) & mag_mask
  m = jnp.minimum(m, inf)  # NaN magnitudes rank as +inf
  col = jax.lax.broadcasted_iota(jnp.int32, x.shape, 1)
  key = (m << s) | (width - 1 - col)
  t = jnp.zeros((x.shape[0], 1), jnp.int32)
  for b in reversed(range(((inf << s) | (width - 1)).bit_length())):  # every bit a key has
    cand = t | (1 << b)
    count = jnp.sum((key >= cand).astype(jnp.int32), axis=1, keepdims=True)
    t = jnp.where(count >= k, cand, t)
  mask_ref[...] = (key >= t).astype(jnp.int8)


@functools.partial(jax.jit, static_argnames=("k", "interpret"))
def row_topk_mask(x: Array, k: int, *, interpret: bool | None = None) -> Array:
  """Bool mask of the k largest |x| per row (last axis), ties to the lowest column.

  Args:
    x: 16-bit floats, last axis a power of two (:func:`supported`).
    k: static, 1 <= k <= width.
    interpret: run the kernel in Pallas' interpreter (default: when the backend is the CPU).
  """
  from jax.experimental import pallas as pl

  if not supported(x.shape, x.dtype):
    raise ValueError(f"topk_pallas: needs a 16-bit dtype and a power-of-two row width, got "
                     f"{x.dtype} rows of {x.shape[-1] if x.ndim else 0}")
  width = x.shape[-1]
  if not 1 <= k <= width:
    raise ValueError(f"topk_pallas: k must be in [1, {width}], got {k}")
  dtype = jnp.dtype(x.dtype)
  rows = math.prod(x.shape[:-1])
  x_RW = x.reshape(rows, width)
  r = _rows_per_block(rows, width)
  if interpret is None:
    interpret = jax.default_backend() == "cpu"
  params = {}
  if not interpret:
    from jax.experimental.pallas import triton as pl_triton

    params["compiler_params"] = pl_triton.CompilerParams(num_warps=4, num_stages=1)
  kernel = functools.partial(_kernel, k=int(k), width=width, inf=_INF_BITS[dtype],
                             mag_mask=_MAG_MASK[dtype])
  mask_RW = pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((rows, width), jnp.int8),
      grid=(rows // r,),
      in_specs=[pl.BlockSpec((r, width), lambda i: (i, 0))],
      out_specs=pl.BlockSpec((r, width), lambda i: (i, 0)),
      interpret=interpret,
      name="abstopk_rows",
      **params,
  )(x_RW)
  return mask_RW.reshape(x.shape).astype(bool)
