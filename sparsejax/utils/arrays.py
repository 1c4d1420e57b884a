"""Explicit broadcasting (the tests run with ``jax_numpy_rank_promotion="raise"``)."""


def lead(a, ndim: int):
  """Adds leading size-1 axes so ``a`` has ``ndim`` dims; refuses an ``a`` with more."""
  if a.ndim > ndim:
    raise ValueError(f"an array of shape {a.shape} has more dims than {ndim}")
  return a.reshape((1,) * (ndim - a.ndim) + a.shape)
